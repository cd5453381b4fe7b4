"""make_all on small synthetic result files writes every figure (PNG + PDF) and table (MD + TeX)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from softpick import plots
from softpick.analysis import run_analysis, write_json_atomic

TASKS = ["arc_easy", "lambada", "piqa", "sciq"]


def _write_results(run_dir, variants=("softmax", "softpick")):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    rng = np.random.default_rng(0)
    docs = [np.concatenate([[1], rng.integers(3, 64, rng.integers(4, 50)), [2]]) for _ in range(12)]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True)
    np.save(data_dir / "tokens_val.npy", tokens)
    np.save(data_dir / "docs_val.npy", offsets)
    cfg = dict(num_docs=10, max_len=40, batch_size=4, sink_eps=[0.2, 0.3], zero_threshold=1e-5,
               example_doc=0, length_sweep=[8, 16, 40])
    for k, v in enumerate(variants):
        d = run_dir / v
        torch.manual_seed(k)
        model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=3,
                                                   num_attention_heads=4, intermediate_size=48, attention_kind=v))
        model.save_pretrained(d / "model")
        run_analysis(d / "model", data_dir, cfg, d / "analysis.json", d / "analysis.npz")
        with open(d / "train_log.jsonl", "w") as f:
            for step in range(1, 301):
                loss = 4 + 3 * np.exp(-step / 60) + 0.15 * rng.standard_normal() + 0.05 * k
                rec = {"step": step, "loss": loss, "lr": 1e-3, "grad_norm": float(np.exp(rng.normal())),
                       "tokens_per_s": 5000.0, "tokens": step * 4096}
                if step % 50 == 0:
                    rec["val_loss"] = loss + 0.1
                f.write(json.dumps(rec) + "\n")
            f.write('{"step": 301, "lo')  # a torn last line must be tolerated

        def ev(acc_drop, ppl_mult, bits=None):
            e = {"tasks": {t: {"acc": 0.6 - 0.05 * i - acc_drop, "acc_norm": 0.55 - acc_drop, "acc_stderr": 0.02}
                           for i, t in enumerate(TASKS)},
                 "perplexity": {"word_perplexity": 40.0 * ppl_mult, "byte_perplexity": 2.0, "bits_per_byte": 1.0}}
            if bits is not None:
                e["quantization"] = {"bits": bits, "method": "hqq", "group_size": 64}
            return e

        write_json_atomic(d / "eval.json", ev(0.01 * k, 1.0))
        for b, drop in [(8, 0.0), (4, 0.02), (3, 0.08), (2, 0.2)]:
            write_json_atomic(d / "quant" / f"hqq_{b}bit.json", ev(drop * (1 - 0.5 * k), 1 + 10 * drop * (1 - 0.5 * k), b))


EXPECTED = ["training_loss", "attention_maps_softmax", "attention_maps_softpick", "hidden_states",
            "sink_scores_heads", "sink_rate_per_layer", "length_sweep", "quantization"]
TABLES = ["analysis_table", "eval_table", "quant_table"]


def test_make_all_writes_every_file(tmp_path):
    run = tmp_path / "results" / "tiny"
    _write_results(run)
    fig_dir = tmp_path / "figures"
    written = plots.make_all(run, fig_dir, ["softmax", "softpick"])
    names = {p.name for p in written}
    for stem in EXPECTED:
        for ext in ("png", "pdf"):
            assert f"{stem}.{ext}" in names
    for stem in TABLES:
        for ext in ("md", "tex"):
            assert f"{stem}.{ext}" in names
    for p in written:
        assert p.exists() and p.stat().st_size > 0, p
    # no temporary files left behind
    assert not [p for p in fig_dir.iterdir() if p.name.startswith(".")]
    md = (fig_dir / "analysis_table.md").read_text()
    assert "softpick" in md and "27,962.8" in md and "different scale" in md
    tex = (fig_dir / "analysis_table.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\%" in tex
    q = (fig_dir / "quant_table.md").read_text()
    assert "| hqq | 2 |" in q and "| float | float |" in q and "Δ" in q


def test_missing_inputs_are_skipped(tmp_path):
    run = tmp_path / "run"
    (run / "softmax").mkdir(parents=True)
    assert plots.make_all(run, tmp_path / "figs") == []
    with pytest.raises(FileNotFoundError):
        plots.make_all(run, tmp_path / "figs", strict=True)
