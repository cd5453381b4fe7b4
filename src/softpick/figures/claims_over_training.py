"""The paper's claims over training: one panel per metric, a line per variant, tokens on x
(results/<run>/dynamics/<variant>.json, softpick.dynamics)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .base import Figure
from .style import color, label_of, plt, save_figure

_LENGTH_STYLES = ["-", "--", ":", "-."]


# (title, metric key, log y) per panel
PANELS = [("validation loss", "val_loss", False), ("sink rate % (ε = 0.3)", "sink", False),
          ("hidden-state kurtosis", "kurtosis", True), ("max |h|", "max_abs", True),
          ("attention exactly 0 (%)", "sparsity_exact_zero_pct", False), ("dead heads % (ε = 1e-6)", "dead", False)]


def _series(records: list[dict], key: str, length: str | None = None) -> np.ndarray:
    if key == "sink":
        return np.array([r["sink_rate"].get(length, {}).get("0.3", np.nan) for r in records], dtype=float)
    if key == "dead":
        return np.array([r["dead_heads_pct"].get("1e-06", np.nan) for r in records], dtype=float)
    return np.array([np.nan if r[key] is None else r[key] for r in records], dtype=float)


def draw(inputs: dict, out, run_label: str = "ours") -> list[Path]:
    runs = {v: json.loads(Path(p).read_text()) for v, p in inputs["dynamics"].items()}
    lengths = sorted({n for d in runs.values() for r in d["snapshots"] for n in r["sink_rate"]}, key=int)
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (title, key, logy) in zip(axes.flat, PANELS):
        for v, d in runs.items():
            recs = d["snapshots"]
            x = np.array([r["tokens"] for r in recs], dtype=float) / 1e6
            if key == "sink":
                for i, n in enumerate(lengths):
                    ax.plot(x, _series(recs, key, n), _LENGTH_STYLES[i % len(_LENGTH_STYLES)], marker="o", ms=3,
                            color=color(v), label=f"{label_of(v)}, T = {n}")
            else:
                ax.plot(x, _series(recs, key), "-", marker="o", ms=3, color=color(v), label=label_of(v))
        ax.set_title(title)
        ax.set_xlabel("training tokens (M)")
        if logy:
            ax.set_yscale("log")
        if key in ("sink", "val_loss"):
            ax.legend(fontsize=7)
    first = next(iter(runs.values()))
    fig.suptitle(f"The claims over training ({first['config']['num_docs']} validation documents per snapshot)")
    fig.tight_layout()
    return save_figure(fig, out)


FIGURES = (Figure("claims_over_training", "figure", "claims_over_training.rst", "Training dynamics", ("dynamics",), draw),)
