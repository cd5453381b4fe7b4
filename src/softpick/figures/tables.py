"""How the tables look: number formats and the writer of <out>.md (Markdown) and <out>.tex (LaTeX, booktabs),
each written atomically."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from .style import num, stem_of, write_text

__all__ = ["fmt", "pct_se", "sink_pair", "sink_at", "write_tables"]


def fmt(x, kind: str = "num") -> str:
    """One cell: "—" for a missing or non-finite value; kind pct / kurt / ppl / num."""
    if x is None:
        return "—"
    x = num(x)
    if not math.isfinite(x):
        return "—"
    if kind == "pct":
        if x == 0:
            return "0.00"
        if abs(x) < 0.1:
            return f"{x:.2g}"
        return f"{x:.2f}"
    if kind == "kurt":
        return f"{x:,.1f}"
    if kind == "ppl":
        return f"{x:,.2f}"
    return f"{x:.2f}"


def pct_se(d: dict, metric: str) -> str:
    """An accuracy in % with its standard error (d[metric + "_stderr"]) where given."""
    a, se = d.get(metric), d.get(f"{metric}_stderr")
    if a is None or not math.isfinite(num(a)):
        return "—"
    return f"{100 * num(a):.1f}" + (f" ± {100 * num(se):.1f}" if se is not None and math.isfinite(num(se)) else "")


def sink_pair(rates: Mapping | None) -> str:
    """Sink rates at ε 0.2 / 0.3 in one cell."""
    rates = rates or {}
    if rates.get("0.2") is None and rates.get("0.3") is None:
        return "—"
    return f"{fmt(rates.get('0.2'), 'pct')} / {fmt(rates.get('0.3'), 'pct')}"


def sink_at(summary: dict, length: int) -> dict | None:
    """Sink rates of an analysis summary at one truncation length (T = 64 pass, the sweep, or the full length)."""
    short = summary.get("sink_rate_short") or {}
    if short.get("length") == length:
        return short.get("sink_rate")
    for row in summary.get("length_sweep") or []:
        if row.get("length") == length:
            return row.get("sink_rate")
    return summary.get("sink_rate") if summary.get("max_len") == length else None


_TEX_ESC = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
            "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "ε": r"$\varepsilon$", "≤": r"$\le$",
            "|·|": r"$|\cdot|$", "—": "--", "≈": r"$\approx$", "±": r"$\pm$", "×": r"$\times$", "·": r"$\cdot$", "†": r"$^\dagger$"}


def _tex(s: str) -> str:
    s = str(s)
    s = s.replace("\\", r"\textbackslash{}")
    for k in ("|·|",):
        s = s.replace(k, "\x00")
    for k, v in _TEX_ESC.items():
        if k != "|·|":
            s = s.replace(k, v)
    return s.replace("\x00", _TEX_ESC["|·|"])


def write_tables(header: list[str], rows: list[list[str]], caption: str, label: str, out, groups: list[int] | None = None,
                 notes: str = "") -> list[Path]:
    """Write <out>.md and <out>.tex; `groups` = row indices before which a midrule is drawn."""
    stem = stem_of(out)

    def mdc(c):
        return str(c).replace("|", "\\|")

    md = [f"**{caption}**", "", "| " + " | ".join(mdc(h) for h in header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    md += ["| " + " | ".join(mdc(c) for c in r) + " |" for r in rows]
    if notes:
        md += ["", notes]
    tex = [r"% requires \usepackage{booktabs}", r"\begin{table}[t]", r"\centering", r"\small",
           r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule",
           " & ".join(_tex(h) for h in header) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        if groups and i in groups and i:
            tex.append(r"\midrule")
        tex.append(" & ".join(_tex(c) for c in r) + r" \\")
    tex += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(caption) + "." + (" " + _tex(notes) if notes else "") + "}",
            r"\label{" + label + "}", r"\end{table}"]
    paths = [stem.with_name(stem.name + ".md"), stem.with_name(stem.name + ".tex")]
    write_text(paths[0], "\n".join(md) + "\n")
    write_text(paths[1], "\n".join(tex) + "\n")
    return paths
