"""The evaluation tables: the paper's Table 1 layout (acc / acc_norm of ARC-e, PIQA, SciQ, LAMBADA accuracy and
perplexity, word perplexity) above the paper's v4 numbers, and every evaluated task
(results/<run>/eval/<variant>.json: {"tasks": {task: {"acc", "acc_norm", "acc_stderr", ...}}, "perplexity":
{"word_perplexity", "byte_perplexity", "bits_per_byte"}}, softpick.evaluate)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Figure
from .paper_numbers import PAPER_EVAL_V4
from .results import load_json
from .style import label_of, num
from .tables import fmt, pct_se, write_tables

# The columns of the paper's Table 1: (task, metric, header).
TABLE1_COLUMNS: list[tuple[str, str, str]] = [
    ("arc_easy", "acc", "ARC-e acc"), ("arc_easy", "acc_norm", "ARC-e acc_norm"),
    ("lambada", "acc", "LAMBADA acc"), ("lambada", "perplexity", "LAMBADA ppl"),
    ("piqa", "acc", "PIQA acc"), ("piqa", "acc_norm", "PIQA acc_norm"),
    ("sciq", "acc", "SciQ acc"), ("sciq", "acc_norm", "SciQ acc_norm"),
]


def _mean_acc(ev: dict, metric: str = "acc") -> float:
    vals = [num(t.get(metric)) for t in ev.get("tasks", {}).values() if t.get(metric) is not None]
    vals = [x for x in vals if math.isfinite(x)]
    return float(np.mean(vals)) if vals else float("nan")


def write_eval_table(eval_paths: Mapping[str, str | Path], out, run_label: str = "ours",
                     include_reference: bool = True) -> list[Path]:
    """The paper's Table 1 layout: acc and acc_norm (ARC-e, PIQA, SciQ), LAMBADA acc + perplexity and word
    perplexity, our models (± standard error) above the paper's v4 340M / 1.8B numbers (another scale)."""
    evs = {v: load_json(p) for v, p in eval_paths.items()}
    header = ["model"] + [h for _, _, h in TABLE1_COLUMNS] + ["word ppl"]
    rows, groups = [], [0]
    for v, e in evs.items():
        tasks = e.get("tasks", {})
        r = [f"{label_of(v)} ({run_label})"]
        for task, metric, _ in TABLE1_COLUMNS:
            d = tasks.get(task) or {}
            r.append(fmt(d.get(metric), "ppl") if metric == "perplexity" else pct_se(d, metric))
        r.append(fmt((e.get("perplexity") or {}).get("word_perplexity"), "ppl"))
        rows.append(r)
    notes = ("Accuracy in % (± bootstrap standard error); perplexity lower is better. Ours: word ppl on the held-out "
             "corpus documents.")
    limits = sorted({"all" if e["limit"] is None else str(e["limit"]) for e in evs.values() if "limit" in e})
    if limits:
        notes += " Our examples per task: " + ", ".join(limits) + "."
    if include_reference:
        groups.append(len(rows))
        for ref in PAPER_EVAL_V4:
            r = [ref["model"] + " *"]
            for task, metric, _ in TABLE1_COLUMNS:
                x = (ref.get(task) or {}).get(metric)
                r.append(fmt(x, "ppl") if metric == "perplexity" else fmt(x))
            r.append(fmt(ref["word_perplexity"], "ppl"))
            rows.append(r)
        notes += (" * The paper (arXiv 2504.20966 v4 Table 1): 340M / 1.8B models, a different scale; word ppl on WikiText; "
                  "— = not reported.")
    return write_tables(header, rows, "Zero-shot evaluation as the paper's Table 1 (%, perplexity)", "tab:eval", out, groups,
                         notes)


def write_eval_table_all(eval_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Every evaluated task: acc and acc_norm (± stderr where given), the mean acc, and every perplexity."""
    evs = {v: load_json(p) for v, p in eval_paths.items()}
    tasks = sorted({t for e in evs.values() for t in e.get("tasks", {})})
    metrics = [(t, m) for t in tasks for m in ("acc", "acc_norm", "perplexity")
               if any(m in ((e.get("tasks") or {}).get(t) or {}) for e in evs.values())]
    pkeys = [k for k in ("word_perplexity", "byte_perplexity", "bits_per_byte")
             if any(k in (e.get("perplexity") or {}) for e in evs.values())]
    header = (["model"] + [f"{t} {'ppl' if m == 'perplexity' else m}" for t, m in metrics] + ["mean acc"]
              + [k.replace("_", " ") for k in pkeys])
    rows = []
    for v, e in evs.items():
        r = [label_of(v)]
        for t, m in metrics:
            d = (e.get("tasks") or {}).get(t) or {}
            r.append(fmt(d.get(m), "ppl") if m == "perplexity" else pct_se(d, m))
        r.append(fmt(100 * _mean_acc(e, "acc")))
        r += [fmt((e.get("perplexity") or {}).get(k), "ppl") for k in pkeys]
        rows.append(r)
    return write_tables(header, rows, "Zero-shot evaluation, every task (%) and perplexity", "tab:eval_all", out,
                         notes="Accuracy in % (± standard error); perplexity lower is better; mean acc over the tasks.")


def _draw_table1(inputs, out, run_label="ours"):
    return write_eval_table(inputs["eval"], out, run_label)


def _draw_all(inputs, out, run_label="ours"):
    return write_eval_table_all(inputs["eval"], out)


FIGURES = (
    Figure("eval_table", "table", "eval_table.rst", "Tables", ("eval",), _draw_table1),
    Figure("eval_table_all_tasks", "table", "eval_table_all_tasks.rst", "Tables", ("eval",), _draw_all),
)
