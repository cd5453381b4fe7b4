"""Our analysis beside the numbers the authors' own scripts committed for their released models
(Phando/SlimPajama-val-sampled, first 1000 documents, BOS first, truncated to L, batch 1, fp16).

REFERENCE (paper_numbers.AUTHORS_REFERENCE) holds those numbers. Their v4 Table 3 equals the L = 256 rows of their length sweeps; the
L = 4096 (2048 for 1.8B) rows are their full-length measurement. Kurtosis, min and max pool what
transformers' output_hidden_states returns (embedding, every layer's output but the last, the final
normed output): ours in that pool are `kurtosis_hf_hidden_states` and the per-hidden-state min / max
without the last layer's un-normed output. Our rows at a length other than analysis.max_len come
from the length sweep, which measures sink rate and sparsity only. The model size is recognised by
(layers, heads) of the analysis; a run of another shape shows the reference rows for comparison only.
"""
from __future__ import annotations

import json
from pathlib import Path

from .base import Figure
from .paper_numbers import AUTHORS_REFERENCE as REFERENCE
from .style import label_of
from .tables import fmt, write_tables

FIELDS = ("sink_0.2", "sink_0.3", "kurtosis", "min", "max", "zeros")


def reference_rows(size: str) -> list[dict]:
    return [dict(zip(("variant", "length", *FIELDS), r)) for r in REFERENCE[size]["rows"]]


def size_of(summary: dict) -> str | None:
    """The released model size an analysis belongs to, by its (layers, heads); None for other shapes."""
    for size, ref in REFERENCE.items():
        if (summary.get("num_layers"), summary.get("num_heads")) == (ref["layers"], ref["heads"]):
            return size
    return None


def ours_at(summary: dict, length: int) -> dict | None:
    """Our numbers at truncation `length` in the authors' conventions; None when not measured there."""
    if length == summary.get("max_len"):
        per = summary.get("per_hidden_state") or {}
        mins, maxs = per.get("min") or [], per.get("max") or []
        hf = lambda xs: xs[:-2] + xs[-1:] if len(xs) > 2 else xs  # noqa: E731  (without the last un-normed output)
        sr = summary.get("sink_rate") or {}
        return {"sink_0.2": sr.get("0.2"), "sink_0.3": sr.get("0.3"),
                "kurtosis": summary.get("kurtosis_hf_hidden_states", summary.get("kurtosis")),
                "min": min(hf(mins)) if mins else summary.get("min"), "max": max(hf(maxs)) if maxs else summary.get("max"),
                "zeros": (summary.get("sparsity") or {}).get("exact_zero_pct")}
    for entry in summary.get("length_sweep") or []:
        if entry.get("length") == length:
            sr = entry.get("sink_rate") or {}
            return {"sink_0.2": sr.get("0.2"), "sink_0.3": sr.get("0.3"), "kurtosis": None, "min": None, "max": None,
                    "zeros": entry.get("sparsity_exact_zero_pct")}
    return None


def _cells(values: dict) -> list[str]:
    kinds = {"sink_0.2": "pct", "sink_0.3": "pct", "kurtosis": "kurt", "min": "num", "max": "num", "zeros": "pct"}
    return [fmt(values.get(f), kinds[f]) for f in FIELDS]


def draw(inputs: dict, out, run_label: str = "ours") -> list[Path]:
    header = ["model", "L", "sink % ε=0.2", "sink % ε=0.3", "kurtosis", "min", "max", "attention = 0 %"]
    summaries = {v: json.loads(Path(p).read_text()) for v, p in inputs["analysis_json"].items()}
    sizes = {size_of(s) for s in summaries.values()} - {None}
    shown = sorted(sizes) or list(REFERENCE)
    rows, groups = [], []
    for size in shown:
        refs = reference_rows(size)
        for length in sorted({r["length"] for r in refs}):
            groups.append(len(rows))
            for v, s in summaries.items():
                ours = ours_at(s, length) if size_of(s) == size else None
                if ours is not None:
                    rows.append([f"{label_of(v)} (ours)", str(length), *_cells(ours)])
            for r in refs:
                if r["length"] == length:
                    rows.append([f"{label_of(r['variant'])} {size} (authors' code) †", str(length), *_cells(r)])
    notes = ("† Committed outputs of the authors' analysis scripts on their released models (SlimPajama-val-sampled, "
             "first 1000 documents, BOS first, truncated to L, batch 1, fp16); their v4 Table 3 equals the L = 256 rows. "
             "Kurtosis / min / max over transformers' hidden_states (embedding, layer outputs but the last, final norm). "
             "Ours at L below analysis.max_len: the length sweep (sink rate and sparsity only). — = not measured / not stated.")
    if not sizes:
        notes += " This run's models have another shape than the released ones: reference rows only, no matching rows of ours."
    return write_tables(header, rows, "Our analysis beside the authors' measurements of their released models",
                        "tab:authors", out, groups, notes)


FIGURES = (Figure("authors_reference", "table", "authors_reference.rst", "Tables", ("analysis_json",), draw),)
