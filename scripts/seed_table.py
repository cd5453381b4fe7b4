#!/usr/bin/env python
"""Runs of one scale with different training seeds, side by side: mean and spread per metric.

    python scripts/seed_table.py --runs small small-seed2 --out results/seeds/small

Reads results/<run>/ as the pipeline writes it (the training log models/<variant>.train_log.jsonl, or
models/<variant>/train_summary.json where the model directory is present, eval/, analysis/, quant/) and writes <out>.json (every value per seed) and <out>.md. A metric a run lacks is left out of
that metric's mean, and the table says over how many seeds each cell is ("n").
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from softpick.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402

VARIANTS = ("softmax", "softpick")


def _read(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def final_val_loss(run_dir: Path, variant: str) -> float | None:
    """The last validation loss of the training: train_summary.json (in the model directory, which published
    runs share through DVC) or else the last record with one in the training log (published in git)."""
    summary = _read(run_dir / "models" / variant / "train_summary.json")
    if summary:
        return summary["final_val_loss"]
    log = run_dir / "models" / f"{variant}.train_log.jsonl"
    if not log.exists():
        return None
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    losses = [r["val_loss"] for r in records if r.get("val_loss") is not None]
    return losses[-1] if losses else None


def run_metrics(run_dir: Path, variant: str) -> dict:
    """Every headline number of one trained model of one run (missing files give no entry)."""
    out = {}
    val_loss = final_val_loss(run_dir, variant)
    if val_loss is not None:
        out["val loss (final, train log)"] = val_loss
    ev = _read(run_dir / "eval" / f"{variant}.json")
    if ev:
        out["word perplexity"] = ev["perplexity"]["word_perplexity"]
        accs = [t.get("acc_norm", t["acc"]) for t in ev["tasks"].values()]
        out[f"mean acc_norm / acc over {len(accs)} tasks (%)"] = 100 * statistics.fmean(accs)
    an = _read(run_dir / "analysis" / f"{variant}.json")
    if an:
        short = an.get("sink_rate_short") or {}
        if short:
            out[f"sink rate ε 0.3, T = {short['length']} (%)"] = short["sink_rate"]["0.3"]
        out[f"sink rate ε 0.3, T = {an['max_len']} (%)"] = an["sink_rate"]["0.3"]
        out["kurtosis"] = an["kurtosis"]
        out["max abs hidden state"] = an["max_abs"]
        out["exact-zero attention (%)"] = an["sparsity"]["exact_zero_pct"]
    base = out.get("word perplexity")
    for q in sorted((run_dir / "quant" / variant).glob("*.json")):
        qev = _read(q)
        if base and qev and "perplexity" in qev:
            out[f"word perplexity increase, {q.stem} (%)"] = 100 * (qev["perplexity"]["word_perplexity"] / base - 1)
    return out


def cell(values: list[float]) -> str:
    if not values:
        return "—"
    mean = statistics.fmean(values)
    digits = 4 if abs(mean) < 10 else 2 if abs(mean) < 1000 else 0
    spread = f" ± {(max(values) - min(values)) / 2:.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread} (n={len(values)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", nargs="+", required=True, help="run names under results/ (one per seed)")
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--out", type=Path, required=True, help="output stem: <out>.json and <out>.md")
    args = ap.parse_args(argv)
    missing = [r for r in args.runs if not (args.results / r).is_dir()]
    if missing:
        ap.error(f"no run directory for {missing} under {args.results}")
    per_run = {r: {v: run_metrics(args.results / r, v) for v in VARIANTS} for r in args.runs}
    metrics = list(dict.fromkeys(m for r in per_run.values() for v in r.values() for m in v))
    rows = ["| metric | " + " | ".join(VARIANTS) + " |", "|---|" + "---:|" * len(VARIANTS)]
    for m in metrics:
        rows.append(f"| {m} | " + " | ".join(cell([per_run[r][v][m] for r in args.runs if m in per_run[r][v]])
                                           for v in VARIANTS) + " |")
    note = (f"\nMean ± half the range over the seeds (runs {', '.join(args.runs)}); n = seeds with that number. "
            "Word-perplexity increase: quantized over the same seed's float model, minus 1.\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out.with_suffix(".json"), {"runs": args.runs, "per_run": per_run})
    write_bytes_atomic(args.out.with_suffix(".md"), ("\n".join(rows) + "\n" + note).encode())
    print(f"wrote {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
