"""analyze_model: the main pass over the documents feeding every registered metric, then the metrics'
own passes; run_analysis: the file-level entry point of the pipeline (JSON summary + NPZ arrays; `softpick analyze`)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from ..finite import check_finite_metrics
from .files import write_json_atomic, write_npz_atomic
from .model_pass import AnalysisContext, analysis_mode, load_docs, run_pass
from .registry import DEFAULT_CFG, build_metrics, merged_config


def analyze_model(model, tokens, offsets, cfg: dict, device="cpu", progress: bool = False,
                  metrics: Iterable[str] | None = None) -> tuple[dict, dict]:
    """Run `model` over the first cfg["num_docs"] validation documents and measure everything.

    Documents are truncated to cfg["max_len"] tokens, batched (cfg["batch_size"], sorted by
    length, right padding + attention_mask) and run under torch.no_grad with attention
    weights and hidden states returned. All metrics are accumulated across batches.

    Returns (summary, arrays). summary (JSON-able) holds the counts of docs, tokens, layers and heads,
    then each metric's keys (registry.METRICS, in that order): the sink rate at each eps (overall
    and per layer; also at T = cfg["sink_short_len"] in "sink_rate_short"), dead heads at each
    cfg["dead_head_eps"] ("dead_heads"; None for a model without `self_attn.o_proj` modules), the
    kurtosis / min / max / max_abs of the pooled hidden states (and per layer), box-plot statistics
    per hidden state ("hidden_box"), sparsity (exact 0 and <= zero_threshold, overall and per layer),
    the example document and, if cfg["length_sweep"] is non-empty, the sink rate and sparsity at each
    truncation length; last the config. arrays (for an .npz) are described in `ARRAYS_DOC`.
    metrics: the names of the metrics to run (registry.METRICS; None = all).
    """
    c = merged_config(cfg)
    max_len, bs, pad_id = int(c["max_len"]), int(c["batch_size"]), int(c["pad_token_id"])
    docs = load_docs(tokens, offsets, c["num_docs"])
    if not c["keep_eos"]:
        docs = [d[:-1] if len(d) > 1 else d for d in docs]
    if not docs:
        raise ValueError("no documents to analyse")
    accs = build_metrics(c, metrics)
    context = AnalysisContext(model, tokens, offsets, docs, c, device, progress)
    with analysis_mode(model), torch.no_grad():
        context.main_stats = run_pass(model, docs, max_len, bs, pad_id, device, accs, "analysis", progress, capture=True)
        context.main = {m.name: m for m in accs}
        for m in accs:
            m.finish(context)
    stats = context.main_stats
    summary = {
        "attention_kind": getattr(getattr(model, "config", None), "attention_kind", None),
        "num_docs": len(docs),
        "num_tokens": stats.num_tokens,
        "max_len": max_len,
        "num_layers": stats.num_layers,
        "num_heads": stats.num_heads,
    }
    arrays: dict[str, np.ndarray] = {}
    for m in accs:
        summary.update(m.result())
        arrays.update(m.arrays())
    summary["config"] = {k: c[k] for k in DEFAULT_CFG}
    return summary, arrays


def run_analysis(model_dir, data_dir, cfg: dict, out_json, out_npz, device="cpu") -> dict:
    """Load a saved model and the validation tokens, analyse, write JSON + NPZ atomically.

    model_dir: a save_pretrained directory of SoftpickForCausalLM. data_dir: holds
    tokens_val.npy (1-D token ids, docs framed [BOS] ids [EOS]) and docs_val.npy (offsets,
    n_docs + 1). A NaN / inf weight or summary number raises NonFiniteError (nothing written). Returns the summary.
    """
    from ..loading import load_model, resolve_device
    from . import analyze_model as analyze  # the package's attribute, so that a test can replace it

    c = merged_config(cfg)
    device = resolve_device(device)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[c["dtype"]]
    model = load_model(model_dir, dtype=dtype, device=device)  # files checked against the manifest; finite
    data_dir = Path(data_dir)
    tokens = np.load(data_dir / "tokens_val.npy", mmap_mode="r")
    offsets = np.load(data_dir / "docs_val.npy")
    summary, arrays = analyze(model, tokens, offsets, c, device, progress=True)
    # every number of a healthy model's summary is finite (the echoed config may hold nulls)
    check_finite_metrics(summary, out_json, optional=lambda path: path.split(".")[0] == "config")
    summary["model_dir"] = str(model_dir)
    summary["data_dir"] = str(data_dir)
    write_npz_atomic(out_npz, arrays)
    write_json_atomic(out_json, summary)
    return summary

