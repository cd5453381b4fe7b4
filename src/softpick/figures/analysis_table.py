"""The analysis table: sink rates (ε 0.2 / 0.3) at T = 64, at L = 256 and at the full length, kurtosis, min / max,
attention sparsity and dead heads of every variant (results/<run>/analysis/<variant>.json, softpick.analysis),
above the paper's and the authors' numbers (paper_numbers), each in the column of the length it was measured at."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .base import Figure
from .paper_numbers import (PAPER_ANALYSIS_AT_256, PAPER_ANALYSIS_REFERENCE, PAPER_ANALYSIS_REFERENCE_10K,
                            PAPER_ANALYSIS_V4, PAPER_REFERENCE_SOURCE, PAPER_V4_SOURCE)
from .results import load_json
from .style import label_of
from .tables import fmt, sink_at, sink_pair, write_tables


def _short_len(sums: Mapping[str, dict]) -> int | None:
    lens = sorted({(x.get("sink_rate_short") or {}).get("length") for x in sums.values()} - {None})
    return lens[0] if len(lens) == 1 else None


def _dead_eps(sums: Mapping[str, dict]) -> list[str]:
    out: list[str] = []
    for x in sums.values():
        for e in ((x.get("dead_heads") or {}).get("pct") or {}):
            if e not in out:
                out.append(e)
    return out or ["1e-06"]

def write_analysis_table(json_paths: Mapping[str, str | Path], out, run_label: str = "ours",
                         include_reference: bool = True) -> list[Path]:
    """Analysis table: sink rates (ε 0.2 / 0.3) at T = 64, at L = 256 and at the full length, kurtosis (ours
    and over transformers' hidden states, as the authors pool them), min / max, sparsity and dead heads; below,
    the paper's rows in the column of the length they were measured at."""
    sums = {v: load_json(p) for v, p in json_paths.items()}
    T = _short_len(sums) or 64
    deps = _dead_eps(sums)
    header = (["model", f"sink % ε 0.2 / 0.3, T={T}", "sink % ε 0.2 / 0.3, L=256", "sink % ε 0.2 / 0.3, full length",
               "kurtosis", "kurtosis (HF states)", "min", "max", "sparsity % (=0)", "sparsity % (≤1e-5)"]
              + [f"dead heads % (ε={e})" for e in deps])
    rows, groups = [], [0]
    for v, s in sums.items():
        sp = s.get("sparsity", {})
        dh = (s.get("dead_heads") or {}).get("pct") or {}
        name = f"{label_of(v)} ({run_label}, {s.get('num_docs', '?')} docs, full length {s.get('max_len', '?')})"
        rows.append([name, sink_pair(sink_at(s, T)), sink_pair(sink_at(s, 256)), sink_pair(s.get("sink_rate")),
                     fmt(s.get("kurtosis"), "kurt"), fmt(s.get("kurtosis_hf_hidden_states"), "kurt"),
                     fmt(s.get("min")), fmt(s.get("max")), fmt(sp.get("exact_zero_pct"), "pct"),
                     fmt(sp.get("le_threshold_pct"), "pct")]
                    + [fmt(dh.get(e), "pct") for e in deps])
    notes = ("Sink rate: % of (layer, head, document) triples whose mean attention on the first token exceeds ε; "
             "documents truncated to T / L / the full length, BOS first. Kurtosis μ4/μ2² of every hidden-state value "
             "(embedding, after each layer, final norm); HF states: without the last layer's un-normed output, as "
             "transformers' output_hidden_states and the authors' scripts pool them.")
    if include_reference:
        refs = ([(r, "full", " *") for r in PAPER_ANALYSIS_V4] + [(r, "full", " †") for r in PAPER_ANALYSIS_REFERENCE]
                + [(r, "full", " †") for r in PAPER_ANALYSIS_REFERENCE_10K] + [(r, 256, " ‡") for r in PAPER_ANALYSIS_AT_256])
        groups.append(len(rows))
        for r, at, mark in refs:
            pair = sink_pair({"0.2": r.get("sink_0.2"), "0.3": r.get("sink_0.3")})
            rows.append([r["model"] + mark, "—", pair if at == 256 else "—", pair if at == "full" else "—",
                         fmt(r.get("kurtosis"), "kurt"), "—", fmt(r.get("min")), fmt(r.get("max")),
                         fmt(r.get("sparsity_zero"), "pct"), fmt(r.get("sparsity_le"), "pct")]
                        + [fmt(r.get(f"dead_{e}"), "pct") for e in deps])
        notes += (" Reference rows, a different scale (340M / 1.8B parameters, 10k-200k steps x 524k tokens): "
                  "* " + PAPER_V4_SOURCE + "; † " + PAPER_REFERENCE_SOURCE + ", documents truncated to 4096 tokens "
                  "(1.8B: 2048); ‡ the same scripts' length sweep at L = 256 (v4 Table 3 equals its 10k-step rows), "
                  "their kurtosis and sparsity at L = 256 too. Their kurtosis pools transformers' hidden states. "
                  "— = not reported. Our dead heads: max |head output| < ε on ≥ 95% of the analysed tokens.")
    return write_tables(header, rows, "Attention sink, massive activations, sparsity and dead heads", "tab:analysis", out,
                         groups, notes)


def _draw(inputs, out, run_label="ours"):
    return write_analysis_table(inputs["analysis_json"], out, run_label)


FIGURES = (Figure("analysis_table", "table", "analysis_table.rst", "Tables", ("analysis_json",), _draw),)
