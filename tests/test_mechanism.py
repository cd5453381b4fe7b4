"""Bigram-Backcopy (softpick.mechanism): the generator, the metrics on hand-made attention, an oracle
model's accuracies, and a tiny end-to-end run (JSON fields, finite values, determinism, the figure)."""
import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml

from softpick import mechanism as mech
from softpick.config import DEFAULT_CONFIG, load_config
from softpick.finite import check_finite_metrics

TINY = {
    "vocab_size": 24, "num_triggers": 3, "seq_len": 24, "batch_size": 8, "steps": 6, "lr": 3.0e-3, "min_lr_ratio": 0.1, "betas": [0.9, 0.99],
    "weight_decay": 0.0, "warmup_steps": 2, "grad_clip": 1.0, "hidden_size": 16, "num_layers": 1, "num_heads": 2,
    "intermediate_size": 32, "initializer_range": 0.02, "eval_sequences": 10, "eval_batch_size": 4,
    "probe_sequences": 4, "sink_eps": [0.2, 0.3], "map_size": 8, "threads": 1, "log_every": 3,
}


def corpus_stream(n=20000, vocab=60, seed=0):
    """Tokens framed like the data stage's: [BOS=1] ... [EOS=2] documents, ids 4.. with a Zipf-like skew."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, vocab + 1)
    body = 4 + rng.choice(vocab, size=n, p=p / p.sum())
    docs = np.split(body, [n // 3, 2 * n // 3])
    return np.concatenate([np.concatenate([[1], d, [2]]) for d in docs]).astype(np.uint16), docs


# --- the generator ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def task():
    tokens, _ = corpus_stream()
    return mech.bigram_task_from_tokens(tokens, vocab_size=30, num_triggers=3, exclude=[0, 1, 2, 3])


def test_sequences_start_with_bos_and_copy_after_every_trigger(task):
    x = task.sample(np.random.default_rng(1), 64, 200)
    assert (x[:, 0] == mech.BOS).all() and (x[:, 1:] != mech.BOS).all()
    assert not task.is_trigger[x[:, 1]].any()  # the first token never triggers (it would copy BOS)
    after = task.is_trigger[x[:, 1:-1]]  # position t - 1 holds a trigger, t = 2..
    assert after.sum() > 500  # the rule is exercised often
    np.testing.assert_array_equal(x[:, 2:][after], x[:, :-2][after])
    assert not task.is_trigger[x[:, 2:][after]].any()  # copied tokens are never triggers


def test_bigram_statistics_come_from_the_corpus(task):
    tokens, _ = corpus_stream()
    counts = np.bincount(tokens, minlength=64)
    counts[:4] = 0  # specials are excluded
    top = np.argsort(-counts, kind="stable")[:30]
    np.testing.assert_array_equal(task.corpus_ids, top)
    np.testing.assert_array_equal(task.triggers, [1, 2, 3])  # the 3 most frequent tokens
    # a float64 reference: count adjacent pairs inside the top-30 set by a loop
    ref = np.zeros((31, 31))
    index = {int(c): i + 1 for i, c in enumerate(top)}
    for a, b in zip(tokens[:-1].tolist(), tokens[1:].tolist()):
        if a in index and b in index:
            ref[index[a], index[b]] += 1
    ref = ref[1:] / ref[1:].sum(1, keepdims=True)
    np.testing.assert_allclose(task.transition[1:], ref, rtol=1e-12, atol=1e-15)


def test_samples_follow_the_bigram_rows(task):
    x = task.sample(np.random.default_rng(2), 512, 128)
    prev, nxt = x[:, 1:-1].ravel(), x[:, 2:].ravel()
    keep = ~task.is_trigger[prev]
    emp = np.zeros_like(task.transition)
    np.add.at(emp, (prev[keep], nxt[keep]), 1)
    for a in np.argsort(-emp.sum(1))[:5]:  # the best-sampled rows
        n = emp[a].sum()
        p = task.transition[a]
        assert np.abs(emp[a] / n - p).max() < 5 * np.sqrt(p.max() / n), a


def test_sampling_is_deterministic_per_seed(task):
    a = task.sample(np.random.default_rng(7), 8, 50)
    np.testing.assert_array_equal(a, task.sample(np.random.default_rng(7), 8, 50))
    assert (a != task.sample(np.random.default_rng(8), 8, 50)).any()


def test_degenerate_rows_fall_back_to_the_unigram():
    tokens = np.array([1, 5, 6, 5, 6, 7, 2], dtype=np.uint16)  # 7 is only ever followed by EOS
    t = mech.bigram_task_from_tokens(tokens, vocab_size=3, num_triggers=1, exclude=[1, 2])
    ids = {int(c): i + 1 for i, c in enumerate(t.corpus_ids)}
    np.testing.assert_allclose(t.transition[ids[7]][1:], np.array([2, 2, 1])[[list(t.corpus_ids).index(c) for c in (5, 6, 7)]] / 5)
    assert t.transition[ids[5], ids[6]] == 1.0


@pytest.mark.parametrize("kwargs, key", [({"vocab_size": 500, "num_triggers": 3}, "mechanism.vocab_size"),
                                         ({"vocab_size": 10, "num_triggers": 10}, "mechanism.num_triggers")])
def test_impossible_task_names_the_key(kwargs, key):
    tokens, _ = corpus_stream(n=3000)
    with pytest.raises(ValueError, match=key):
        mech.bigram_task_from_tokens(tokens, exclude=[0, 1, 2, 3], **kwargs)


# --- the metrics --------------------------------------------------------------------------------
def hand_made_attention(inputs, is_trigger, bos_other=1.0):
    """Trigger queries: weight 1 on the previous token. Other queries: bos_other on BOS, the rest on themselves."""
    B, T = inputs.shape
    a = torch.zeros(B, 1, T, T, dtype=torch.float64)
    a[:, 0, 0, 0] = 1.0
    for b in range(B):
        for t in range(1, T):
            if is_trigger[inputs[b, t]]:
                a[b, 0, t, t - 1] = 1.0
            else:
                a[b, 0, t, 0] = bos_other
                a[b, 0, t, t] += 1.0 - bos_other
    return a


def test_attention_measures_on_hand_made_attention(task):
    x = torch.from_numpy(task.sample(np.random.default_rng(3), 6, 40))
    a = hand_made_attention(x, task.is_trigger, bos_other=0.75)
    m = mech.attention_measures([a, 0.5 * a], x, task.is_trigger, map_size=5)
    trig = task.is_trigger[x.numpy()]
    trig[:, 0] = False
    for b in range(6):  # float64 reference by loops
        score = np.mean([a[b, 0, t, 0].item() for t in range(40)])
        assert m["sink"][0, 0, b] == pytest.approx(score, abs=1e-12)
        assert m["sink"][1, 0, b] == pytest.approx(score / 2, abs=1e-12)
        assert m["bos_trigger"][0, 0, b] == (0.0 if trig[b].any() else m["bos_trigger"][0, 0, b])
        assert m["bos_other"][0, 0, b] == pytest.approx(0.75)
        if trig[b].any():
            assert m["prev_trigger"][0, 0, b] == pytest.approx(1.0)
    np.testing.assert_allclose(m["map_sum"][0, 0], a[:, 0, :5, :5].sum(0).numpy())


class OracleModel(torch.nn.Module):
    """Predicts the copy at trigger queries and the bigram argmax elsewhere; hand-made attention."""

    def __init__(self, task):
        super().__init__()
        self.task = task
        self.config = SimpleNamespace(num_hidden_layers=1)

    def forward(self, input_ids, output_attentions=False, output_hidden_states=False):
        B, T = input_ids.shape
        logits = torch.zeros(B, T, self.task.num_tokens)
        best = torch.from_numpy(self.task.bigram_argmax())
        logits.scatter_(-1, best[input_ids][..., None], 1.0)
        trig = torch.from_numpy(self.task.is_trigger)[input_ids]
        trig[:, 0] = False
        for b, t in trig.nonzero().tolist():
            logits[b, t] = 0
            logits[b, t, input_ids[b, t - 1]] = 1.0
        hidden = torch.ones(B, T, 4)
        hidden[:, 0] *= 10  # BOS norm 20, others 2
        attn = hand_made_attention(input_ids, self.task.is_trigger).float()
        return SimpleNamespace(logits=logits, attentions=(attn,), hidden_states=(hidden, hidden, hidden))


def test_measure_scores_an_oracle_at_the_ceiling(task):
    cfg = {**TINY, "seq_len": 64, "eval_sequences": 40, "eval_batch_size": 16}
    r = mech.measure(OracleModel(task), task, cfg, np.random.default_rng(4))
    acc = r["accuracy"]
    assert acc["copy"] == 1.0
    assert acc["bigram_argmax_agreement"] == 1.0
    assert acc["bigram"] == acc["bigram_bayes_optimal"]
    assert abs(acc["bigram_bayes_optimal"] - acc["bigram_bayes_optimal_expected"]) < 0.05
    assert r["bos_attention"]["trigger_queries"] == 0.0 and r["bos_attention"]["non_trigger_queries"] == 1.0
    assert r["previous_token_attention_at_triggers"]["mean"] == 1.0
    assert r["sink_rate"]["0.3"] == 100.0  # every sample's mean weight on BOS is far above 0.3
    assert r["residual_norm"]["bos_over_others"] == [10.0, 10.0, 10.0]
    frac = r["trigger_query_fraction"]
    assert 0.05 < frac < 0.8


# --- end to end ---------------------------------------------------------------------------------
def expected_keys():
    return {"variant", "seed", "config", "task", "model", "train", "eval_sequences", "trigger_query_fraction", "sink_rate",
            "sink_rate_per_layer", "sink_score_mean", "bos_attention", "previous_token_attention_at_triggers",
            "residual_norm", "accuracy", "loss", "attention_map", "timing"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_data_dir):
    root = tmp_path_factory.mktemp("mech")
    data = tiny_data_dir  # a real data stage's output: the stage verifies it against its manifest
    config = {"seed": 5, "mechanism": dict(TINY)}
    outs = {v: root / f"{v}.json" for v in ("softmax", "softpick")}
    for v, p in outs.items():
        mech.run_mechanism(config, v, data, p, log=lambda *_: None)
    return data, config, outs


def test_tiny_run_writes_every_field_finite(tiny_run):
    _, _, outs = tiny_run
    for v, p in outs.items():
        r = json.loads(p.read_text())
        assert set(r) == expected_keys(), v
        assert r["variant"] == v and r["model"]["attention_kind"] == v
        # every measured number finite and present (the project's own check; raises naming the entry)
        check_finite_metrics({k: r[k] for k in expected_keys() - {"config", "task", "model"}}, p)
        assert set(r["sink_rate"]) == {"0.2", "0.3"}
        assert len(r["residual_norm"]["bos"]) == TINY["num_layers"] + 2
        assert np.array(r["attention_map"]["mean"]).shape == (1, 2, 8, 8)
        assert [e["step"] for e in r["train"]["log"]] == [3, 6] and "copy_accuracy" in r["train"]["log"][0]
        assert 0 <= r["accuracy"]["copy"] <= 1 and 0 < r["accuracy"]["bigram_bayes_optimal"] <= 1


def test_tiny_run_is_deterministic(tiny_run, tmp_path):
    data, config, outs = tiny_run
    again = tmp_path / "softmax.json"
    mech.run_mechanism(config, "softmax", data, again, log=lambda *_: None)
    a, b = json.loads(outs["softmax"].read_text()), json.loads(again.read_text())
    for r in (a, b):
        r.pop("timing"), r["train"].pop("seconds"), r["train"].pop("cpu_seconds")
    assert a == b


def test_figure_from_both_variants(tiny_run, tmp_path):
    _, _, outs = tiny_run
    from softpick.figures.mechanism import plot_mechanism

    paths = plot_mechanism(outs, tmp_path / "mechanism")
    assert sorted(p.name for p in paths) == ["mechanism.pdf", "mechanism.png"]
    assert all(p.stat().st_size > 10_000 for p in paths)


def test_config_section_is_validated_and_stage_needs_data(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"mechanism": {"num_layers": 7}}))
    with pytest.raises(ValueError, match="mechanism.num_layers"):
        load_config([bad])
    from softpick.cli import run_stage

    config = load_config([])
    assert config["mechanism"]["num_layers"] <= 3
    with pytest.raises(FileNotFoundError, match="'data' stage"):
        run_stage("mechanism", config, variant="softmax", root=tmp_path)
    with pytest.raises(ValueError, match="--variant"):
        run_stage("mechanism", config, variant="gated", root=tmp_path)
    cfg = copy.deepcopy(config)
    cfg["mechanism"]["hidden_size"] = 30
    cfg["mechanism"]["num_heads"] = 4
    with pytest.raises(ValueError, match="mechanism.hidden_size"):
        mech.run_mechanism(cfg, "softmax", tmp_path, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
    assert DEFAULT_CONFIG.exists()
