"""The authors' measurement protocol: the slimpajama_val data source, analysis.keep_eos, the reference
table of their committed numbers, and configs/authors-*.yaml."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from softpick.config import load_config
from softpick.data import DataSourceUnavailableError, train_bpe_tokenizer, verify_data_dir
from softpick.data import prepare_data as prepare_slimpajama_val  # the stage entry dispatches on data.source
from softpick.data.sources.slimpajama_val import DATASET

ROOT = Path(__file__).resolve().parents[1]
WORDS = "the model reads every token and attention picks a few of them while the rest sink".split()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, 40)) for _ in range(50)]
    out = tmp_path_factory.mktemp("tok")
    train_bpe_tokenizer(texts, 300).save_pretrained(str(out))
    return out


def _dataset(path: Path, n: int) -> list[str]:
    """A local copy of the dataset's layout: one JSON record per line with 'text' (and 'meta')."""
    rng = np.random.default_rng(1)
    texts = [f"doc {i} " + " ".join(rng.choice(WORDS, int(rng.integers(3, 30)))) for i in range(n)]
    texts[2] = "   "  # empty texts are skipped, as the authors' loop does
    path.write_text("".join(json.dumps({"text": t, "meta": {"redpajama_set_name": "x"}}) + "\n" for t in texts))
    return texts


def _cfg(path, tok, **kw):
    return {"source": "slimpajama_val", "path": str(path), "val_documents": 5, "val_fraction": None,
            "tokenizer": {"kind": "pretrained", "name": str(tok)}, **kw}


def test_validation_split_is_the_first_documents_in_order(tmp_path, tokenizer_dir):
    texts = _dataset(tmp_path / "val.jsonl", 12)
    m = prepare_slimpajama_val(_cfg(tmp_path / "val.jsonl", tokenizer_dir), tmp_path / "data", seed=0)
    verify_data_dir(tmp_path / "data")  # the standard layout, checked against its manifest
    kept = [t for t in texts if t.strip()]
    val = [json.loads(line)["text"] for line in (tmp_path / "data" / "val_docs.jsonl").read_text().splitlines()]
    assert val == kept[:5]  # no shuffling
    assert m["skipped_empty_documents"] == 1 and m["splits"]["train"]["n_documents"] == len(kept) - 5
    tokens, offsets = np.load(tmp_path / "data" / "tokens_val.npy"), np.load(tmp_path / "data" / "docs_val.npy")
    assert len(offsets) == 6 and all(tokens[offsets[i]] == 1 and tokens[offsets[i + 1] - 1] == 2 for i in range(5))
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    assert tok.decode(tokens[offsets[1] + 1:offsets[2] - 1].tolist()).strip() == kept[1]


def test_no_documents_left_for_training_repeats_the_validation_split(tmp_path, tokenizer_dir):
    _dataset(tmp_path / "val.jsonl", 6)  # 5 non-empty
    m = prepare_slimpajama_val(_cfg(tmp_path / "val.jsonl", tokenizer_dir), tmp_path / "data", seed=0)
    assert m["splits"]["train"]["n_documents"] == 5 and "again" in m["splits"]["train"]["documents"]
    with pytest.raises(ValueError, match="has only 5 non-empty documents"):
        prepare_slimpajama_val(_cfg(tmp_path / "val.jsonl", tokenizer_dir, val_documents=8), tmp_path / "d2", seed=0)


@pytest.mark.parametrize("change, match", [
    ({"val_documents": None}, "data.val_documents"),
    ({"tokenizer": {"kind": "bpe"}}, "data.tokenizer"),
    ({"max_documents": 3}, "data.max_documents"),
    ({"path": "/no/such/slimpajama.jsonl"}, "/no/such/slimpajama.jsonl"),
])
def test_bad_keys_are_named(tmp_path, tokenizer_dir, change, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        prepare_slimpajama_val({**_cfg(tmp_path / "x.jsonl", tokenizer_dir), **change}, tmp_path / "data", seed=0)


def test_offline_names_the_dataset(tmp_path, tokenizer_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = _cfg(tmp_path, tokenizer_dir)
    cfg.pop("path")
    with pytest.raises(DataSourceUnavailableError, match=DATASET):
        prepare_slimpajama_val(cfg, tmp_path / "data", seed=0)
    assert not (tmp_path / "data" / "tokens_val.npy").exists()


def test_keep_eos_false_drops_the_closing_eos():
    from softpick.analysis import analyze_model
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(0)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                               intermediate_size=32, attention_kind="softmax"))
    docs = [[1, 5, 6, 7, 2], [1, 8, 9, 2], [1, *range(10, 30), 2]]
    tokens = np.array([t for d in docs for t in d], dtype=np.uint16)
    offsets = np.cumsum([0] + [len(d) for d in docs])
    cfg = {"num_docs": 3, "max_len": 16, "batch_size": 1, "length_sweep": [], "sink_short_len": None, "box_sample_size": 100}
    with_eos, _ = analyze_model(model, tokens, offsets, cfg)
    without, _ = analyze_model(model, tokens, offsets, {**cfg, "keep_eos": False})
    assert with_eos["num_tokens"] - without["num_tokens"] == 2  # the third document is truncated before its EOS anyway


def _summary(layers, heads, max_len, **kw):
    n = layers + 2
    per = {"min": [-1.0] * n, "max": [1.0] * n, "kurtosis": [3.0] * n, "max_abs": [1.0] * n}
    per["max"][-2] = 999.0  # the last layer's un-normed output: outside transformers' hidden_states
    per["min"][1] = -7.5
    return {"num_layers": layers, "num_heads": heads, "max_len": max_len, "sink_rate": {"0.2": 70.0, "0.3": 66.0},
            "kurtosis": 40000.0, "kurtosis_hf_hidden_states": 30000.0, "min": -7.5, "max": 999.0, "per_hidden_state": per,
            "sparsity": {"exact_zero_pct": 1.5},
            "length_sweep": [{"length": 256, "sink_rate": {"0.2": 72.5, "0.3": 68.0}, "sparsity_exact_zero_pct": 0.5}], **kw}


def test_reference_table_puts_ours_beside_the_authors(tmp_path):
    from softpick.figures import REGISTRY
    from softpick.figures.authors_reference import REFERENCE

    assert "authors_reference" in REGISTRY
    p = tmp_path / "softmax.json"
    p.write_text(json.dumps(_summary(24, 16, 4096)))
    md, tex = REGISTRY["authors_reference"].draw({"analysis_json": {"softmax": p}}, tmp_path / "t")
    text = md.read_text()
    assert "71.23" in text and "67.74" in text and "27,962.8" in text and "94.46" in text  # theirs
    row256 = next(line for line in text.splitlines() if "(ours)" in line and "| 256 |" in line)
    assert "72.50" in row256 and "0.50" in row256
    row4096 = next(line for line in text.splitlines() if "(ours)" in line and "| 4096 |" in line)
    assert "30,000.0" in row4096 and "999" not in row4096 and "-7.50" in row4096 and "1.00" in row4096
    assert "1.8B" not in text and tex.read_text().startswith("%")
    assert REFERENCE["340M"]["rows"][0][2:4] == (71.23, 67.74)
    q = tmp_path / "tiny.json"  # another shape: the reference rows only
    q.write_text(json.dumps(_summary(4, 4, 256)))
    md, _ = REGISTRY["authors_reference"].draw({"analysis_json": {"softpick": q}}, tmp_path / "u")
    text = md.read_text()
    assert "(ours)" not in text and "1.8B" in text and "another shape" in text


@pytest.mark.parametrize("name, hidden, layers, heads, mlp, max_len", [
    ("authors-340m", 1024, 24, 16, 2816, 4096), ("authors-1.8b", 2048, 32, 32, 5632, 2048)])
def test_authors_configs(name, hidden, layers, heads, mlp, max_len):
    from softpick.fla_config import fla_intermediate_size
    from softpick.importer import models_from_sources

    c = load_config([str(ROOT / "configs" / f"{name}.yaml")])
    size = name.split("-")[1].upper().replace("M", "M")
    assert models_from_sources(c) == {"softmax": f"zaydzuhri/vanilla-{size}-4096-model",
                                      "softpick": f"zaydzuhri/softpick-{size}-4096-model"}
    m = c["model"]
    assert (m["hidden_size"], m["num_hidden_layers"], m["num_attention_heads"], m["intermediate_size"]) == (hidden, layers, heads, mlp)
    assert fla_intermediate_size(hidden, 4, None) == mlp  # fla's width for hidden_ratio 4
    d, a = c["data"], c["analysis"]
    assert (d["source"], d["val_documents"], d["tokenizer"]["name"]) == ("slimpajama_val", 1000, "fla-hub/transformer-1.3B-100B")
    assert (a["num_docs"], a["max_len"], a["batch_size"], a["dtype"], a["keep_eos"]) == (1000, max_len, 1, "float16", False)
    assert 256 in a["length_sweep"] and max(a["length_sweep"]) == max_len and min(a["length_sweep"]) == 16
