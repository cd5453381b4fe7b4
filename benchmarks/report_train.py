"""Summarise the training benchmarks: results/bench/train.json + train.png + sink_emergence.png.

Reads what benchmarks/run_train_device.sh brought back and was committed under results/bench/:
train_bench.jsonl (one row per bench_train.py run, `device_call` naming the device call it came
from) and sink_emergence_*.json (benchmarks/sink_emergence.py). Ratios are taken between rows of
the same device call only (side by side on the same machine).

    python benchmarks/report_train.py [--bench-dir results/bench]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TARGETS = {"mfu_340m_softpick": 0.40, "scaling_1_to_2_gpus": 1.8}


def _find(rows, **match):
    hits = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    return hits[-1] if hits else None


def summarise(rows: list[dict]) -> dict:
    calls = sorted({r["device_call"] for r in rows})
    out = {"targets": TARGETS, "calls": {}}
    for call in calls:
        rs = [r for r in rows if r["device_call"] == call]
        c = {"rows": [{k: r[k] for k in ("tag", "shape", "variant", "gpus", "parallelism", "micro_batch", "accum",
                                          "tokens_per_s", "mfu", "peak_mem_gib")} for r in rs]}
        for shape in ("340m", "small"):
            sp = _find(rs, shape=shape, variant="softpick", gpus=1)
            sm = _find(rs, shape=shape, variant="softmax", gpus=1)
            if sp and sm:
                c[f"softpick_over_softmax_{shape}"] = sp["tokens_per_s"] / sm["tokens_per_s"]
        one = _find(rs, shape="340m", variant="softpick", gpus=1)
        if one:
            c["micro_batch_340m"] = one["micro_batch"]
            c["mfu_340m_softpick"] = one["mfu"]
            c["mfu_340m_softpick_met"] = one["mfu"] >= TARGETS["mfu_340m_softpick"]
            for par in ("ddp", "fsdp"):
                two = _find(rs, shape="340m", variant="softpick", gpus=2, parallelism=par)
                if two:
                    ratio = two["tokens_per_s"] / one["tokens_per_s"]
                    c[f"scaling_1_to_2_gpus_{par}"] = ratio
                    c[f"scaling_1_to_2_gpus_{par}_met"] = ratio >= TARGETS["scaling_1_to_2_gpus"]
        out["calls"][call] = c
    return out


def _call_with(rows, **match) -> list[dict]:
    """The rows of the newest device call that has a row matching `match` (ratios stay within one call)."""
    call = _find(rows, **match)["device_call"]  # rows are appended call by call: the last match is the newest
    return [r for r in rows if r["device_call"] == call]


def plot(rows: list[dict], sinks: dict[str, dict], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    colors = {"softmax": "#4C72B0", "softpick": "#DD8452"}
    for ax, shape in zip(axes[:2], ("340m", "small")):
        rs = _call_with(rows, shape=shape, gpus=1)
        singles = sorted((r for r in rs if r["shape"] == shape and r["gpus"] == 1), key=lambda r: r["variant"])
        for i, r in enumerate(singles):
            ax.bar(i, r["tokens_per_s"] / 1e3, color=colors[r["variant"]])
            ax.text(i, r["tokens_per_s"] / 1e3, f"{r['tokens_per_s'] / 1e3:,.0f}k tok/s\nMFU {r['mfu']:.1%}",
                    ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(singles)), [r["variant"] for r in singles])
        ax.set_ylabel("tokens / s (thousands)")
        ax.set_ylim(0, max(r["tokens_per_s"] for r in singles) / 1e3 * 1.3)
        r0 = singles[0]
        ax.set_title(f"{shape}: 1 H200, seq {r0['seq_len']}, micro-batch {r0['micro_batch']}\n"
                     f"{r0['parameters'] / 1e6:.0f}M params (call {r0['device_call']})", fontsize=10)
    ax = axes[2]
    rs = _call_with(rows, shape="340m", variant="softpick", gpus=2)
    scaling = [r for r in rs if r["shape"] == "340m" and r["variant"] == "softpick"]
    labels = [f"{r['gpus']} GPU" + (f"\n{r['parallelism'].upper()}" if r["gpus"] > 1 else "") for r in scaling]
    base = _find(scaling, gpus=1)["tokens_per_s"]
    for i, r in enumerate(scaling):
        ax.bar(i, r["tokens_per_s"] / 1e3, color=colors["softpick"], alpha=0.5 + 0.25 * (r["gpus"] - 1))
        ax.text(i, r["tokens_per_s"] / 1e3, f"{r['tokens_per_s'] / base:.2f}×", ha="center", va="bottom")
    ax.axhline(1.8 * base / 1e3, ls="--", c="gray", lw=1)
    ax.text(-0.4, 1.8 * base / 1e3, "target 1.8×", ha="left", va="bottom", fontsize=8, color="gray")
    ax.set_xticks(range(len(scaling)), labels)
    ax.set_ylabel("tokens / s (thousands)")
    ax.set_ylim(0, max(r["tokens_per_s"] for r in scaling) / 1e3 * 1.15)
    ax.set_title(f"340M softpick, 1 → 2 H200, global batch {scaling[0]['global_batch_tokens']:,} tokens\n"
                 f"micro-batch {scaling[0]['micro_batch']} per GPU (call {scaling[0]['device_call']})", fontsize=10)
    fig.suptitle("The pipeline's trainer on H200: bf16 autocast, torch.compile, fused AdamW (benchmarks/bench_train.py)")
    fig.tight_layout()
    fig.savefig(out_dir / "train.png", dpi=130)
    plt.close(fig)

    if not sinks:
        return
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    styles = {"softmax": "-", "softpick": "--"}
    for name, d in sorted(sinks.items()):
        pts = d["checkpoints"]
        tok = [p["tokens"] / 1e6 for p in pts]
        kw = dict(marker="o", ms=4, ls=styles[d["variant"]], label=name)
        axes[0].plot(tok, [p["sink_rate"]["0.2"] for p in pts], **kw)  # already in %
        axes[1].plot(tok, [p["kurtosis"] for p in pts], **kw)
        axes[2].plot(tok, [p["max_abs"] for p in pts], **kw)
    for ax, title in zip(axes[:3], ("sink rate ε=0.2 (%)", "hidden-state kurtosis", "max |hidden state|")):
        ax.set_xlabel("training tokens (millions)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.5, 10)
    axes[0].legend(fontsize=8)
    log = out_dir / "small_softmax.train_log.jsonl"
    if log.exists():
        recs = [json.loads(l) for l in log.read_text().splitlines() if l.strip()]
        axes[3].plot([r["tokens"] / 1e6 for r in recs], [r["loss"] for r in recs], lw=1, label="train")
        val = [r for r in recs if r.get("val_loss") is not None]
        axes[3].plot([r["tokens"] / 1e6 for r in val], [r["val_loss"] for r in val], marker=".", label="held-out")
        ep = recs[-1]["tokens"] / (recs[-1]["epoch"] + 1) / 1e6 if recs[-1]["epoch"] else None
        axes[3].set_title("softmax, lr 1e-3: loss" + (f" (epoch ≈ {ep:.1f}M tokens)" if ep else ""))
        axes[3].set_xlabel("training tokens (millions)")
        axes[3].legend(fontsize=8)
        axes[3].grid(alpha=0.3)
    any_run = next(iter(sinks.values()))
    fig.suptitle(f"small config (42M params) on the embedded corpus: no attention sinks at any checkpoint "
                 f"(analysis: {any_run['val_tokens']:,} held-out tokens, length {any_run['analysis']['max_len']})")
    fig.tight_layout()
    fig.savefig(out_dir / "sink_emergence.png", dpi=130)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench-dir", type=Path, default=ROOT / "results" / "bench")
    a = ap.parse_args()
    from softpick.atomic import write_json_atomic

    rows = [json.loads(l) for l in (a.bench_dir / "train_bench.jsonl").read_text().splitlines() if l.strip()]
    sinks = {}
    for f in sorted(a.bench_dir.glob("sink_emergence_*.json")):
        d = json.loads(f.read_text())
        t = d["train"]
        sinks[f"{d['variant']}, lr {t['lr']:g}, wd {t.get('weight_decay', 0.1):g}"] = d
    summary = summarise(rows)
    summary["sink_emergence"] = {
        name: {"final": d["checkpoints"][-1], "max_sink_rate_0.2": max(p["sink_rate"]["0.2"] for p in d["checkpoints"]),
               "max_kurtosis": max(p["kurtosis"] for p in d["checkpoints"]),
               "max_abs": max(p["max_abs"] for p in d["checkpoints"])}
        for name, d in sinks.items()}
    write_json_atomic(a.bench_dir / "train.json", summary)
    plot(rows, sinks, a.bench_dir)
    print(json.dumps({k: v for k, v in summary["calls"].items()}, indent=1, default=str)[:3000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
