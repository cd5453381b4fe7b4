"""The sink-free attention variants (the paper's v4 Table 3 at our scale): per variant the analysis
(results/<run>/analysis/<variant>.json), passkey accuracy (passkey/<variant>.json) and final validation loss
(models/<variant>/train_summary.json), above the paper's rows (paper_numbers). Drawn by its own Snakemake
rule (variants_table), after the passkey stage."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from .base import Figure
from .paper_numbers import PAPER_PASSKEY_LENGTHS, PAPER_VARIANTS_REFERENCE
from .results import load_json
from .style import label_of, num
from .tables import fmt, sink_at, sink_pair, write_tables


def _dead_heads_pct(summary: dict, eps: str = "1e-06"):
    """% dead heads at eps: the analysis JSON's "dead_heads" -> "pct" -> eps (None when not measured)."""
    dead = summary.get("dead_heads")
    if isinstance(dead, dict) and isinstance(dead.get("pct"), dict):
        return dead["pct"].get(eps)
    return None


def write_variants_table(analysis_paths: Mapping[str, str | Path], out, *,
                         passkey_paths: Mapping[str, str | Path] | None = None,
                         train_summary_paths: Mapping[str, str | Path] | None = None,
                         run_label: str = "ours", include_reference: bool = True) -> list[Path]:
    """The paper's Table 3 at our scale: one row per variant, then the paper's v4 rows (†).

    Reads, per variant: the analysis JSON (sink_rate, kurtosis, min, max, sparsity; sink at T = 64 from
    "sink_rate_short" or the length sweep; dead heads from "dead_heads"/"pct"/"1e-06", '—' when absent), the
    passkey JSON (accuracy per length) and train_summary.json ("final_val_loss"). Missing files give '—'.
    """
    passkey_paths, train_summary_paths = passkey_paths or {}, train_summary_paths or {}
    header = ["model", "sink % ε 0.2 / 0.3, T=64", "sink % ε 0.2 / 0.3, L=256", "sink % ε 0.2 / 0.3, full length",
              "kurtosis", "min", "max", "sparsity % (=0)", "dead heads % (ε=1e-6)", "val loss", "passkey %"]
    rows, groups, our_lengths = [], [0], set()
    for v, p in analysis_paths.items():
        s = load_json(p)
        val = load_json(train_summary_paths[v]).get("final_val_loss") if v in train_summary_paths else None
        passkey = "—"
        if v in passkey_paths:
            pk = load_json(passkey_paths[v])
            acc = pk.get("accuracy_by_length", {})
            our_lengths.add(tuple(acc))
            passkey = " / ".join(f"{num(a):.1f}" for a in acc.values()) or "—"
        rows.append([f"{label_of(v)} ({run_label})", sink_pair(sink_at(s, 64)), sink_pair(sink_at(s, 256)),
                     sink_pair(s.get("sink_rate")), fmt(s.get("kurtosis"), "kurt"),
                     fmt(s.get("min")), fmt(s.get("max")), fmt(s.get("sparsity", {}).get("exact_zero_pct"), "pct"),
                     fmt(_dead_heads_pct(s), "pct"), fmt(val), passkey])
    notes = []
    if our_lengths:
        notes.append("Passkey: greedy exact-match accuracy at " + "; ".join("/".join(ls) for ls in sorted(our_lengths))
                     + " prompt tokens (ours).")
    if include_reference:
        groups.append(len(rows))
        for r in PAPER_VARIANTS_REFERENCE:
            pk = r.get("passkey")
            rows.append([f"{label_of(r['variant'])} (paper v4, 340M, 10k steps) †", "—",
                         sink_pair({"0.2": r["sink_0.2"], "0.3": r["sink_0.3"]}), "—", fmt(r["kurtosis"], "kurt"),
                         fmt(r["min"]), fmt(r["max"]), fmt(r["sparsity_zero"], "pct"), fmt(r.get("dead_heads"), "pct"),
                         "—", " / ".join(f"{a:g}" for a in pk) if pk else "—"])
        notes.append("† The paper's v4 Table 3 (arXiv 2504.20966): 340M parameters, 10k steps, a different scale from "
                     "ours; its numbers are the authors' length sweep at L = 256 (sink rate, kurtosis, min / max and "
                     "sparsity all at 256); its passkey numbers (Table 4) at " + "/".join(map(str, PAPER_PASSKEY_LENGTHS))
                     + " tokens of a 4096-token context, dead heads from §7.2. — = not reported.")
    return write_tables(header, rows, "Sink-free attention variants (the paper's Table 3)", "tab:variants", out, groups,
                         " ".join(notes))


def _draw(inputs, out, run_label="ours"):
    return write_variants_table(inputs["analysis_json"], out, passkey_paths=inputs.get("passkey"),
                                train_summary_paths=inputs.get("train_summary"), run_label=run_label)


FIGURES = (Figure("variants_table", "table", "variants_table.rst", "Tables", ("analysis_json",), _draw,
                  optional=("passkey", "train_summary"), rule="variants_table"),)
