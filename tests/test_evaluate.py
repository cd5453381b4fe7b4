"""softpick.evaluate: offline task data, lm-eval task definitions, end-to-end wiring."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("lm_eval")

from softpick import evaluate as ev  # noqa: E402
from softpick.loading import load_model_and_tokenizer  # noqa: E402

ROWS = {"arc_easy": ("test", 2376), "arc_challenge": ("test", 1172), "lambada": ("test", 5153),
        "piqa": ("validation", 1838), "hellaswag": ("validation", 10042), "winogrande": ("validation", 1267),
        "boolq": ("validation", 3270), "openbookqa": ("test", 500), "sciq": ("validation", 1000)}
FIELDS = {
    "arc_easy": {"id", "question", "choices", "answerKey"},
    "arc_challenge": {"id", "question", "choices", "answerKey"},
    "lambada": {"text"},
    "piqa": {"goal", "sol1", "sol2", "label"},
    "hellaswag": {"ind", "activity_label", "ctx_a", "ctx_b", "endings", "label"},
    "winogrande": {"sentence", "option1", "option2", "answer"},
    "boolq": {"idx", "question", "passage", "label"},
    "openbookqa": {"id", "question_stem", "choices", "answerKey"},
    "sciq": {"question", "distractor1", "distractor2", "distractor3", "correct_answer", "support"},
}
LM_EVAL_YAML = {"arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                "lambada": "lambada/lambada_openai.yaml", "piqa": "piqa/piqa.yaml",
                "hellaswag": "hellaswag/hellaswag.yaml", "winogrande": "winogrande/default.yaml",
                "boolq": "super_glue/boolq/default.yaml", "openbookqa": "openbookqa/openbookqa.yaml",
                "sciq": "sciq/sciq.yaml"}


# ------------------------------------------------------------------ fixtures

def make_tiny(out: Path, kind: str = "softpick") -> Path:
    """A random 2-layer SoftpickForCausalLM + a byte-level BPE tokenizer, saved like a trained model dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    texts = [d["text"] for d in ev.load_task_docs("lambada")[:300]]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>", pad_token="<pad>")
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 3)
    torch.manual_seed(0)
    cfg = SoftpickConfig(vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=176, attention_kind=kind, max_position_embeddings=512,
                         initializer_range=0.2)
    model = SoftpickForCausalLM(cfg)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def val_docs(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("val") / "val_docs.jsonl"
    docs = [d["text"] for d in ev.load_task_docs("lambada")[1000:1004]]
    p.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs)))
    return p


# ------------------------------------------------------------------ data

def test_manifest_rows_and_splits():
    man = ev.load_manifest()
    assert set(man) == set(ev.TASKS) == set(ROWS)
    for t, (split, n) in ROWS.items():
        assert man[t]["split"] == split, t
        assert man[t]["rows"] == n, t


@pytest.mark.parametrize("task", sorted(ROWS))
def test_task_file(task):
    rows = ev.load_task_docs(task)  # also checks the sha256 against the manifest
    assert len(rows) == ROWS[task][1]
    assert all(set(r) == FIELDS[task] for r in rows)
    # OLMES "unconditional" requests (doc_id >= 1e6) would double the rows: the counts above are the
    # upstream split sizes, and documents are distinct (upstream LAMBADA itself repeats two passages)
    keys = [json.dumps(r, sort_keys=True) for r in rows]
    assert len(keys) - len(set(keys)) <= (2 if task == "lambada" else 0)
    if "answerKey" in FIELDS[task]:
        assert all(r["answerKey"].lstrip() in r["choices"]["label"] for r in rows)
        assert all(len(r["choices"]["text"]) == len(r["choices"]["label"]) >= 3 for r in rows)
    if task == "lambada":
        assert all(" " in r["text"] and not r["text"].endswith(" ") for r in rows)
    if task in ("piqa", "boolq"):
        assert {r["label"] for r in rows} == {0, 1}


def test_sources_md_lists_every_task():
    text = (ev.task_data_dir() / "SOURCES.md").read_text()
    for t, (split, n) in ROWS.items():
        assert f"| `{t}` |" in text and f"| {split} | {n} |" in text


def _norm(v):
    """!function values: the same function of the same source file (module objects may differ)."""
    if callable(v):
        import inspect

        return Path(inspect.getsourcefile(v)).resolve(), v.__name__
    return v


def test_task_yamls_mirror_lm_eval(tmp_path):
    """Our YAMLs use lm-eval's own prompt / choices / target / metrics for each task."""
    import lm_eval.tasks
    from lm_eval.tasks._yaml_loader import load_yaml

    root = Path(lm_eval.tasks.__file__).parent
    for t in ev.TASKS:
        ours = load_yaml(ev.tasks_dir() / f"{t}.yaml")  # as shipped: no templating
        theirs = load_yaml(root / LM_EVAL_YAML[t])
        assert ours["task"] == ev.PREFIX + t
        assert ours["dataset_kwargs"]["task"] == t and ours["custom_dataset"].__name__ == "load_task"
        for key in ("output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "process_docs", "metric_list"):
            assert _norm(ours.get(key)) == _norm(theirs.get(key)), (t, key, ours.get(key), theirs.get(key))


def test_unknown_task_rejected():
    with pytest.raises(ValueError, match="unknown task"):
        ev.evaluate_model(None, None, tasks=["wikitext"], limit=1, val_docs=None, ppl_max_docs=None,
                          batch_size=1, device="cpu", max_length=64)


# ------------------------------------------------------------------ end to end

def test_evaluate_dir_end_to_end(tiny_dir, val_docs, tmp_path):
    out = tmp_path / "eval.json"
    cfg = {"tasks": list(ev.TASKS), "limit": 3, "ppl_max_docs": 2, "batch_size": 64, "max_length": 128}
    rec = ev.evaluate_dir(tiny_dir, cfg, val_docs, out, "cpu")
    assert json.loads(out.read_text()) == rec
    assert not list(tmp_path.glob("*.tmp"))
    assert set(rec) >= {"model_dir", "tasks", "perplexity", "limit", "lm_eval_version", "seconds"}
    assert set(rec["tasks"]) == set(ev.TASKS)
    for t, row in rec["tasks"].items():
        assert row["n"] == 3, t
        assert 0.0 <= row["acc"] <= 1.0 and math.isfinite(row["acc_stderr"]), t
    for t in ("arc_easy", "hellaswag", "piqa", "sciq", "openbookqa"):
        assert 0.0 <= rec["tasks"][t]["acc_norm"] <= 1.0
    assert math.isfinite(rec["tasks"]["lambada"]["perplexity"])
    ppl = rec["perplexity"]
    assert ppl["n_docs"] == 2
    assert all(math.isfinite(ppl[k]) and ppl[k] > 0 for k in ("word_perplexity", "byte_perplexity", "bits_per_byte"))
    assert ppl["byte_perplexity"] == pytest.approx(2 ** ppl["bits_per_byte"], rel=1e-9)
    assert rec["limit"] == 3


def test_rolling_perplexity_equals_direct_logprobs(tiny_dir, tmp_path):
    """lm-eval's loglikelihood_rolling (through our task) == sum of the model's token log-probs."""
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    text = "The quick brown fox jumps over the lazy dog, and then it sleeps."
    p = tmp_path / "one.jsonl"
    p.write_text(json.dumps({"id": 0, "text": text}) + "\n")
    res = ev.evaluate_model(model, tokenizer, tasks=[], limit=None, val_docs=p, ppl_max_docs=None,
                            batch_size=4, device="cpu", max_length=128)
    n_bytes = len(text.encode("utf-8"))
    ll_harness = -res["perplexity"]["bits_per_byte"] * n_bytes * math.log(2)

    ids = tokenizer.encode(text, add_special_tokens=False)
    assert 4 < len(ids) < 127
    inp = torch.tensor([[tokenizer.bos_token_id] + ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(inp).logits[0, :-1].double(), dim=-1)
    ll_direct = logp.gather(-1, torch.tensor(ids)[:, None]).sum().item()
    assert ll_harness == pytest.approx(ll_direct, rel=1e-4, abs=1e-3)
    n_words = len(text.split())
    assert res["perplexity"]["word_perplexity"] == pytest.approx(math.exp(-ll_direct / n_words), rel=1e-3)


def test_deterministic(tiny_dir, val_docs):
    model, tokenizer = load_model_and_tokenizer(tiny_dir)
    kw = dict(tasks=["arc_easy", "boolq"], limit=4, val_docs=val_docs, ppl_max_docs=1, batch_size=8,
              device="cpu", max_length=64)
    a, b = ev.evaluate_model(model, tokenizer, **kw), ev.evaluate_model(model, tokenizer, **kw)
    assert a["tasks"] == b["tasks"] and a["perplexity"] == b["perplexity"]


# ------------------------------------------------------------------ issue 15: one entry point, the config's settings

def test_stages_use_the_config_not_defaults_of_their_own(monkeypatch, tmp_path, tiny_data_dir, capsys):
    """`softpick evaluate` / `softpick quantize` (the only entry points: `python -m softpick.evaluate` /
    `python -m softpick.quantize` are gone) use the config's eval (and quantize) values, not defaults of
    their own (evaluate's entry point had batch size 32 where the config says 64)."""
    from softpick import cli, quantize
    from softpick.config import load_config

    overrides = ["quantize.methods=[gptq]", "quantize.bits=[4]"]
    config = load_config(overrides=overrides)
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "results" / config["run_name"]
    (run / "models" / "softpick").mkdir(parents=True)
    (run / "models" / "softpick" / "config.json").write_text("{}")
    (run / "data").symlink_to(tiny_data_dir)
    seen = {}

    def fake_evaluate(model_dir, cfg, *args, **kwargs):
        seen["eval"] = cfg
        return {}

    def fake_quantize(model_dir, qcfg, ecfg, *args, **kwargs):
        seen["quant"], seen["quant_eval"] = qcfg, ecfg
        return {"quantization": {}}

    monkeypatch.setattr(ev, "evaluate_dir", fake_evaluate)
    monkeypatch.setattr(quantize, "quantize_and_evaluate", fake_quantize)
    sets = [a for o in overrides for a in ("--set", o)]
    assert cli.main(["evaluate", "--variant", "softpick", *sets]) == 0
    assert cli.main(["quantize", "--variant", "softpick", "--method", "gptq", "--bits", "4", *sets]) == 0
    out = capsys.readouterr().out
    assert f"wrote {Path('results', config['run_name'], 'eval', 'softpick.json')}" in out
    assert f"wrote {Path('results', config['run_name'], 'quant', 'softpick', 'gptq_4bit.json')}" in out
    assert seen["eval"] == config["eval"] and seen["quant_eval"] == config["eval"]
    assert seen["eval"]["batch_size"] == 64
    assert seen["quant"] == {**config["quantize"], "methods": ["gptq"], "bits": [4]}  # group size, lm_head, gptq
