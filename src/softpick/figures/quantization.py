"""Post-training quantization (the paper's Fig. 3 and Tables 8-10): one panel per metric against weight bits and
one table row per method x bits, each beside the unquantized model (results/<run>/quant/<variant>/<method>_<bits>bit.json
and results/<run>/eval/<variant>.json: {"tasks": {task: {"acc", "acc_norm", "acc_stderr", ...}}, "perplexity":
{"word_perplexity", ...}, "quantization": {"bits", "method", ...}})."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

from .base import Figure
from .results import load_json
from .style import color, label_of, num, plt, save_figure
from .tables import fmt, write_tables

# The panels of the quantization figure and the columns of its table (the paper's Fig. 3, Tables 8-10):
# (key, label, getter, log scale, higher is better).
QUANT_METRICS: list[tuple[str, str, object, bool, bool]] = [
    ("arc_easy", "ARC-e acc_norm (%)", lambda e: _task_metric(e, "arc_easy", "acc_norm", 100), False, True),
    ("piqa", "PIQA acc_norm (%)", lambda e: _task_metric(e, "piqa", "acc_norm", 100), False, True),
    ("sciq", "SciQ acc_norm (%)", lambda e: _task_metric(e, "sciq", "acc_norm", 100), False, True),
    ("word_ppl", "held-out word perplexity", lambda e: (e.get("perplexity") or {}).get("word_perplexity"), True, False),
    ("lambada_ppl", "LAMBADA perplexity", lambda e: _task_metric(e, "lambada", "perplexity"), True, False),
]

# Standard errors of the metrics that have one (lm-eval's bootstrap / binomial stderr), same scale.
QUANT_STDERR = {
    "arc_easy": lambda e: _task_metric(e, "arc_easy", "acc_norm_stderr", 100),
    "piqa": lambda e: _task_metric(e, "piqa", "acc_norm_stderr", 100),
    "sciq": lambda e: _task_metric(e, "sciq", "acc_norm_stderr", 100),
    "lambada_ppl": lambda e: _task_metric(e, "lambada", "perplexity_stderr"),
}


def _delta_cell(key: str, a_eval: dict, b_eval: dict, a, b) -> str:
    """b - a, marked "(n.s.)" when smaller than two standard errors of the difference."""
    if a is None or b is None:
        return "—"
    d = num(b) - num(a)
    cell = f"{d:+,.2f}"
    get_se = QUANT_STDERR.get(key)
    if get_se is not None:
        sa, sb = get_se(a_eval), get_se(b_eval)
        if sa is not None and sb is not None and abs(d) < 2 * math.hypot(num(sa), num(sb)):
            cell += " (n.s.)"
    return cell


def _task_metric(ev: dict, task: str, metric: str, scale: float = 1.0):
    v = (ev.get("tasks") or {}).get(task, {}).get(metric)
    return None if v is None else scale * num(v)


def _bits_of(ev: dict):
    q = ev.get("quantization") or {}
    return q.get("bits")


def _method_of(ev: dict) -> str:
    return (ev.get("quantization") or {}).get("method", "")


def _quant_series(float_eval: Mapping[str, str | Path], quant_evals: Mapping[str, Sequence[str | Path]]):
    """{(method, variant): [("float" | bits, eval dict)]}: the float model first, then bits descending."""
    series: dict[tuple[str, str], list] = {}
    variants = list(float_eval) + [v for v in quant_evals if v not in float_eval]
    loaded = {v: [load_json(p) for p in quant_evals.get(v, [])] for v in variants}
    methods = sorted({_method_of(q) for qs in loaded.values() for q in qs})
    for m in methods:
        for v in variants:
            pts = [("float", load_json(float_eval[v]))] if v in float_eval else []
            pts += sorted([(_bits_of(q), q) for q in loaded[v] if _method_of(q) == m], key=lambda t: -num(t[0]))
            if len(pts) > (1 if v in float_eval else 0):
                series[(m, v)] = pts
    return series


def _present_metrics(series) -> list:
    evs = [e for pts in series.values() for _, e in pts]
    return [m for m in QUANT_METRICS if any(m[2](e) is not None for e in evs)]


_METHOD_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1)), "v"), ((0, (1, 1)), "P"), ((0, (3, 1, 1, 1)), "X")]


def plot_quantization(float_eval: Mapping[str, str | Path], quant_evals: Mapping[str, Sequence[str | Path]], out) -> list[Path]:
    """One panel per metric vs weight bits (float = the unquantized model), one line per method × variant."""
    series = _quant_series(float_eval, quant_evals)
    metrics = _present_metrics(series)
    if not metrics:
        raise ValueError("no quantization metric (ARC-e / PIQA / SciQ acc_norm, word / LAMBADA perplexity) in the results")
    all_bits = sorted({num(b) for pts in series.values() for b, _ in pts if b != "float"}, reverse=True)
    xpos = {"float": 0, **{b: i + 1 for i, b in enumerate(all_bits)}}
    xt = ["float"] + [f"{int(b) if float(b).is_integer() else b}" for b in all_bits]
    methods = sorted({m for m, _ in series})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.6), squeeze=False)
    for ax, (_, label, get, log, _) in zip(axes[0], metrics):
        for (m, v), pts in series.items():
            ls, mk = _METHOD_STYLES[methods.index(m) % len(_METHOD_STYLES)]
            xy = [(xpos["float" if b == "float" else num(b)], get(e)) for b, e in pts]
            xy = [(x, num(y)) for x, y in xy if y is not None and math.isfinite(num(y))]
            if xy:
                ax.plot(*zip(*xy), linestyle=ls, marker=mk, ms=5, lw=1.6, color=color(v), label=f"{label_of(v)} · {m}")
        ax.set_xticks(range(len(xt)), xt)
        ax.set(xlabel="weight bits", title=label)
        if log:
            ax.set_yscale("log")
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = min(len(labels), 2 * max(len(metrics), 3))
    fig.tight_layout()
    fig.legend(handles, labels, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=ncol, fontsize=8)
    return save_figure(fig, out, f"Post-training quantization ({', '.join(methods)}): 'float' = the unquantized "
                                 "model; colour = attention variant, line style = method; perplexity on a log scale.")


def write_quant_table(float_eval: Mapping[str, str | Path], quant_evals: Mapping[str, Sequence[str | Path]], out) -> list[Path]:
    """One row per method × bits (and the float model): every metric per variant, and Δ = softpick − softmax."""
    series = _quant_series(float_eval, quant_evals)
    metrics = _present_metrics(series)
    variants = list(dict.fromkeys(v for _, v in series))
    delta = "softmax" in variants and "softpick" in variants
    header = ["method", "bits"]
    for _, label, *_ in metrics:
        short = label.replace(" (%)", "").replace("held-out ", "")
        header += [f"{short} {label_of(v)}" for v in variants] + ([f"{short} Δ"] if delta else [])
    rows_by_key: dict[tuple, dict] = {}
    for (m, v), pts in series.items():
        for b, e in pts:
            key = ("float", "float") if b == "float" else (m, b)
            rows_by_key.setdefault(key, {})[v] = e
    order = [("float", "float")] + sorted((k for k in rows_by_key if k[0] != "float"), key=lambda k: (k[0], -num(k[1])))
    rows, groups, prev = [], [], None
    for key in order:
        if key not in rows_by_key:
            continue
        if key[0] != prev:
            groups.append(len(rows))
            prev = key[0]
        evs = rows_by_key[key]
        r = [key[0], str(key[1])]
        for key, _, get, log, _ in metrics:
            vals = {v: (get(evs[v]) if v in evs else None) for v in variants}
            kind = "ppl" if log else "num"
            for v in variants:
                se = QUANT_STDERR[key](evs[v]) if key in QUANT_STDERR and v in evs else None
                r.append(fmt(vals[v], kind) + (f" ± {fmt(se, kind)}" if se is not None and vals[v] is not None else ""))
            if delta:
                r.append(_delta_cell(key, evs.get("softmax", {}), evs.get("softpick", {}), vals["softmax"], vals["softpick"]))
        rows.append(r)
    notes = ("Δ = softpick − softmax (accuracy: positive favours softpick; perplexity: negative favours softpick); "
             "(n.s.): smaller than two standard errors of the difference, not a difference. "
             "acc_norm in %; perplexity lower is better; — = not measured." if delta else "")
    return write_tables(header, rows, "Post-training quantization: acc_norm (%) and perplexity", "tab:quant", out, groups, notes)


def _draw_figure(inputs, out, run_label="ours"):
    return plot_quantization(inputs.get("eval", {}), inputs["quant"], out)


def _draw_table(inputs, out, run_label="ours"):
    return write_quant_table(inputs.get("eval", {}), inputs["quant"], out)


FIGURES = (
    Figure("quantization", "figure", "quantization.rst", "Quantization", ("quant",), _draw_figure, optional=("eval",)),
    Figure("quant_table", "table", "quant_table.rst", "Tables", ("quant",), _draw_table, optional=("eval",)),
)
