"""Passkey retrieval: the prompts hold the key where they say, a perfect oracle scores 100 %, the JSON is complete."""
from __future__ import annotations

import json

import pytest
import torch

from softpick import passkey as pk
from softpick.config import ConfigError, load_config
from softpick.data import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_data_dir):
    return load_tokenizer(tiny_data_dir)


def _enc(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_prompt_holds_the_key_at_the_stated_depth(tokenizer, depth):
    p = pk.make_prompt(tokenizer, 300, "48213", depth)
    head = 1 + len(_enc(tokenizer, pk.INTRO))
    needle = _enc(tokenizer, pk.NEEDLE.format(key="48213"))
    question = _enc(tokenizer, pk.QUESTION)
    assert p.ids[0] == tokenizer.bos_token_id and p.ids[1:head] == _enc(tokenizer, pk.INTRO)
    assert p.ids[p.needle_start:p.needle_start + len(needle)] == needle
    assert p.ids[p.answer_start - len(question):p.answer_start] == question
    assert p.answer_ids == _enc(tokenizer, " 48213")
    assert tokenizer.decode(p.answer_ids).strip() == "48213"
    text = tokenizer.decode(p.prompt_ids)
    assert text.count("48213") == 2 and text.endswith("The pass key is")
    # the needle sits after `depth` of the filler, to one sentence
    filler = p.answer_start - len(question) - head - len(needle)
    sentence = max(len(_enc(tokenizer, s)) for s in pk.FILLER)
    assert abs((p.needle_start - head) - depth * filler) <= sentence
    # the length: at most the target, within one filler sentence of it
    assert 300 - sentence < len(p.ids) <= 300


def test_trials_are_seeded_and_cover_every_length(tokenizer):
    a = pk.make_trials(tokenizer, [150, 250], 5, 5, seed=3)
    b = pk.make_trials(tokenizer, [150, 250], 5, 5, seed=3)
    c = pk.make_trials(tokenizer, [150, 250], 5, 5, seed=4)
    assert [(p.key, p.depth, p.ids) for p in a] == [(p.key, p.depth, p.ids) for p in b]
    assert [p.key for p in a] != [p.key for p in c]
    assert [p.target_length for p in a] == [150] * 5 + [250] * 5
    assert all(len(p.key) == 5 and 10000 <= int(p.key) <= 99999 for p in a)
    assert len({p.key for p in a}) > 1 and len({round(p.depth, 3) for p in a}) > 1


def test_too_short_length_is_named(tokenizer):
    with pytest.raises(ValueError, match="passkey length 20 is shorter than the prompt without filler"):
        pk.make_trials(tokenizer, [20], 1, 5, seed=0)


class Oracle(torch.nn.Module):
    """Logits one-hot on the true next token of the known prompt the input is a prefix of (perfect), or, with
    `wrong=True`, on a wrong token at the last input position (greedy then misses the key)."""

    def __init__(self, prompts, vocab, wrong=False):
        super().__init__()
        self.prompts, self.vocab, self.wrong = [p.ids for p in prompts], vocab, wrong

    def forward(self, ids):
        logits = torch.zeros(ids.shape[0], ids.shape[1], self.vocab)
        for b, row in enumerate(ids.tolist()):
            truth = next((full for full in self.prompts if full[:len(row)] == row), None)
            nxt = torch.tensor([truth[t + 1] if truth is not None and t + 1 < len(truth) else 0 for t in range(len(row))])
            if self.wrong:
                nxt[-1] = (nxt[-1] + 1) % self.vocab
            logits[b, torch.arange(len(row)), nxt] = 10.0
        return type("Out", (), {"logits": logits})()


def greedy_decode(model, prompt_ids, n):
    """Plain greedy decoding, the whole prefix every step (what generate(do_sample=False) does without a cache)."""
    ids = list(prompt_ids)
    for _ in range(n):
        logits = model(torch.tensor([ids])).logits
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids):]


def test_perfect_oracle_scores_100_and_a_wrong_one_0(tokenizer):
    prompts = pk.make_trials(tokenizer, [140, 200], 3, 5, seed=1)
    vocab = len(tokenizer)
    good = pk.summarize(prompts, pk.greedy_scores(Oracle(prompts, vocab), prompts, 2, "cpu"), train_seq_len=150)
    assert good["accuracy_by_length"] == {"140": 100.0, "200": 100.0}
    assert [r["beyond_training_context"] for r in good["lengths"]] == [False, True]
    bad = pk.summarize(prompts, pk.greedy_scores(Oracle(prompts, vocab, wrong=True), prompts, 2, "cpu"), None)
    assert bad["accuracy_by_length"] == {"140": 0.0, "200": 0.0}
    assert all(s["key_logprob"] < good["samples"][i]["key_logprob"] for i, s in enumerate(bad["samples"]))


def test_teacher_forced_score_agrees_with_greedy_decoding(tokenizer):
    """A trial is correct exactly when greedy decoding generates the key; the first greedy token matches too."""
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    prompts = pk.make_trials(tokenizer, [125], 2, 5, seed=2)
    torch.manual_seed(0)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48)).eval()
    for m in (model, Oracle(prompts, len(tokenizer))):
        with torch.no_grad():
            scores = pk.greedy_scores(m, prompts, 2, "cpu")
            for p, s in zip(prompts, scores):
                decoded = greedy_decode(m, p.prompt_ids, len(p.answer_ids))
                assert s["correct"] == (decoded == p.answer_ids)
                assert s["greedy_ids"][0] == decoded[0]


def test_run_passkey_writes_the_json(tiny_data_dir, tmp_path):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    tok = load_tokenizer(tiny_data_dir)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48, attention_kind="gated"))
    model.save_pretrained(tmp_path / "model")
    out = tmp_path / "passkey" / "gated.json"
    cfg = {"lengths": [128, 192], "trials": 3, "batch_size": 2}
    res = pk.run_passkey(tmp_path / "model", tiny_data_dir, cfg, out, variant="gated", seed=5, train_seq_len=160)
    on_disk = json.loads(out.read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert on_disk["variant"] == "gated" and on_disk["attention_kind"] == "gated"
    assert on_disk["scoring"].startswith("greedy exact match")
    assert on_disk["config"]["key_digits"] == 5 and on_disk["seed"] == 5 and on_disk["train_seq_len"] == 160
    assert set(on_disk["accuracy_by_length"]) == {"128", "192"}
    for row in on_disk["lengths"]:
        assert set(row) == {"target_length", "mean_tokens", "trials", "correct", "accuracy", "mean_key_logprob",
                            "beyond_training_context"}
        assert row["trials"] == 3 and 0 <= row["accuracy"] <= 100 and row["mean_key_logprob"] < 0
    assert [r["beyond_training_context"] for r in on_disk["lengths"]] == [False, True]
    assert len(on_disk["samples"]) == 6
    assert {"key", "depth", "needle_token", "tokens", "correct", "key_logprob", "greedy"} <= set(on_disk["samples"][0])
    assert list(out.parent.iterdir()) == [out]  # written atomically: no temporary file left


def test_passkey_config_is_validated():
    assert load_config()["passkey"]["lengths"]
    with pytest.raises(ConfigError, match=r"config key 'passkey\.trials'"):
        load_config(overrides=["passkey.trials=0"])
    with pytest.raises(ConfigError, match=r"unknown config key 'passkey\.depth'"):
        load_config(overrides=["passkey.depth=0.5"])
