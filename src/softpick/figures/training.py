"""Training curves: training loss (raw and EMA) and validation loss vs tokens, and the gradient norm, per variant
(results/<run>/models/<variant>/train_log.jsonl: one JSON per line, {"step", "loss", "lr", "grad_norm",
"tokens_per_s", "tokens"[, "val_loss"]})."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Figure
from .results import read_jsonl
from .style import color, label_of, num, plt, save_figure


def _ema(y: np.ndarray, alpha: float) -> np.ndarray:
    """Bias-corrected exponential moving average (alpha = weight of the past)."""
    out = np.empty_like(y, dtype=float)
    m, w = 0.0, 0.0
    for i, v in enumerate(y):
        if not np.isfinite(v):
            out[i] = out[i - 1] if i else np.nan
            continue
        m = alpha * m + (1 - alpha) * v
        w = alpha * w + (1 - alpha)
        out[i] = m / w
    return out


def plot_training_loss(logs: Mapping[str, str | Path], out, ema: float = 0.9) -> list[Path]:
    """Training loss (raw faint + EMA) and validation loss vs tokens, and grad norm, per variant."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    use_tokens = True
    recs = {v: read_jsonl(p) for v, p in logs.items()}
    if any(not any("tokens" in r for r in rs) for rs in recs.values()):
        use_tokens = False
    final = []
    for v, rs in recs.items():
        tr = [r for r in rs if "loss" in r and r.get("loss") is not None]
        c = color(v)
        if tr:
            x = np.array([r["tokens"] if use_tokens else r["step"] for r in tr], dtype=float)
            x = x / 1e6 if use_tokens else x
            y = np.array([num(r["loss"]) for r in tr])
            ax.plot(x, y, color=c, alpha=0.22, lw=0.8)
            sm = _ema(y, ema)
            ax.plot(x, sm, color=c, lw=2.0, label=f"{label_of(v)} train (EMA)")
            final.append(f"{label_of(v)} {sm[-1]:.3f}")
            g = np.array([num(r.get("grad_norm")) for r in tr])
            if np.isfinite(g).any():
                ax2.plot(x, g, color=c, alpha=0.25, lw=0.8)
                ax2.plot(x, _ema(g, ema), color=c, lw=1.8, label=label_of(v))
        va = [r for r in rs if r.get("val_loss") is not None]
        if va:
            x = np.array([r["tokens"] if use_tokens else r["step"] for r in va], dtype=float)
            x = x / 1e6 if use_tokens else x
            ax.plot(x, [num(r["val_loss"]) for r in va], "o--", color=c, ms=5, lw=1.2, mfc="white",
                    mew=1.5, label=f"{label_of(v)} validation")
    xl = "training tokens (millions)" if use_tokens else "optimizer step"
    ax.set(xlabel=xl, ylabel="cross-entropy loss (nats/token)", title="Training loss: softmax vs softpick")
    ax.legend()
    # focus on the interesting part: clip the early spike
    ys = [l.get_ydata() for l in ax.get_lines() if len(l.get_ydata())]
    if ys:
        allv = np.concatenate([np.asarray(y, dtype=float) for y in ys])
        allv = allv[np.isfinite(allv)]
        if allv.size:
            lo, hi = np.percentile(allv, 0.5), np.percentile(allv, 90)
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.6 * (hi - lo + 1e-9))
    ax2.set(xlabel=xl, ylabel="gradient norm (before clipping)", title="Gradient norm")
    ax2.set_yscale("log")
    if ax2.get_lines():
        ax2.legend()
    cap = f"Faint: raw per-log-step values; bold: EMA (α={ema}). Final EMA train loss: " + ", ".join(final) + "."
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, out, cap)


def _draw(inputs, out, run_label="ours"):
    return plot_training_loss(inputs["train_log"], out)


FIGURES = (Figure("training_loss", "figure", "training_loss.rst", "Training", ("train_log",), _draw),)
