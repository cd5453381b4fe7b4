"""Attention sinks: the sink score per layer and head (results/<run>/analysis/<variant>.npz), and the sink rate
and attention sparsity per layer and against the truncation length (the analysis JSON), softpick.analysis.
ε = 0.3 solid / filled markers, 0.2 dashed / open markers; one marker per variant."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from .base import Figure
from .results import load_json
from .style import color, label_of, marker, num, pick_indices, plt, save_figure

_EPS_STYLE = {"0.3": "-", "0.2": "--"}


# one marker per variant, filled for eps 0.3 / open for 0.2, and a small horizontal dodge per series:
# series that coincide (e.g. every softpick layer at 0 %, at both eps) stay distinguishable
def _dodge(n: int, width: float = 0.36) -> np.ndarray:
    """n evenly spaced x offsets centred on 0, spanning `width` (layers are 1 apart)."""
    return np.zeros(1) if n <= 1 else np.linspace(-width / 2, width / 2, n)


def _plot_per_layer_sink(ax, sources: Mapping[str, dict], title: str) -> None:
    """sources: {variant: a dict with "sink_rate_per_layer" and "sink_rate" (a summary or its sink_rate_short)}."""
    series = [(v, e) for v, src in sources.items() for e in src["sink_rate_per_layer"]]
    for off, (v, e) in zip(_dodge(len(series)), series):
        src = sources[v]
        ys = np.array([num(y) for y in src["sink_rate_per_layer"][e]])
        ax.plot(np.arange(len(ys)) + off, ys, _EPS_STYLE.get(e, ":"), marker=marker(v), ms=5, color=color(v), lw=1.6,
                mfc="white" if e == "0.2" else color(v), mew=1.4,
                label=f"{label_of(v)}, ε={e} (all layers {num(src['sink_rate'][e]):.2f}%)")
    ax.set(xlabel="layer", ylabel="sink rate (% of head × doc pairs)", title=title, ylim=(-3, 103))
    ax.legend(fontsize=8, handlelength=3.5)


def plot_sink_rate(json_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Per-layer sink rate at the full length and (when measured) at T = sink_short_len, and per-layer
    sparsity, softmax vs softpick. ε = 0.3 solid / filled markers, 0.2 dashed / open markers; each
    series is dodged sideways so that coinciding series (several at 0 %) stay visible."""
    sums = {v: load_json(p) for v, p in json_paths.items()}
    short = [s.get("sink_rate_short") for s in sums.values() if s.get("sink_rate_short")]
    n = 3 if short else 2
    fig, axes = plt.subplots(1, n, figsize=(5.4 * n, 4.4))
    lens = sorted({s.get("max_len") for s in sums.values() if s.get("max_len")})
    full = f"documents up to {lens[0]} tokens" if len(lens) == 1 else "full length"
    _plot_per_layer_sink(axes[0], sums, f"Sink rate per layer ({full})")
    if short:
        T = sorted({r["length"] for r in short})
        _plot_per_layer_sink(axes[1], {v: s["sink_rate_short"] for v, s in sums.items() if s.get("sink_rate_short")},
                             f"Sink rate per layer (first {', '.join(map(str, T))} tokens)")
    ax2 = axes[-1]
    offsets = _dodge(2 * len(sums))
    for k, (v, s) in enumerate(sums.items()):
        sp = s["sparsity_per_layer"]
        x = np.arange(len(sp["exact_zero_pct"]))
        ax2.plot(x + offsets[2 * k], [num(y) for y in sp["exact_zero_pct"]], "-", marker=marker(v), ms=5,
                 color=color(v), lw=1.6, label=f"{label_of(v)}, exactly 0 ({num(s['sparsity']['exact_zero_pct']):.1f}%)")
        ax2.plot(x + offsets[2 * k + 1], [num(y) for y in sp["le_threshold_pct"]], "--", marker=marker(v), ms=5,
                 mfc="white", mew=1.2, color=color(v), lw=1.2,
                 label=f"{label_of(v)}, |a| ≤ {s['sparsity'].get('threshold', 1e-5):g}")
    ax2.set(xlabel="layer", ylabel="% of causal attention entries", title="Attention sparsity per layer", ylim=(-3, 103))
    ax2.legend(fontsize=8, handlelength=3.5)
    for a in axes:
        a.xaxis.get_major_locator().set_params(integer=True)
    cap = ("Sink rate: % of (head, doc) pairs whose mean attention on the first token exceeds ε (padded queries excluded); "
           "the short panel truncates the same documents (Gu et al.'s T = 64 protocol). Series are shifted sideways "
           "around each layer so coinciding ones stay visible. Sparsity: causal lower triangle incl. diagonal.")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out, cap)


def plot_sink_scores(npz_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Heatmaps (layer x head) of the sink score averaged over docs, one per variant, shared 0..1 scale."""
    n = len(npz_paths)
    fig, axes = plt.subplots(1, n, figsize=(4.4 * n + 1, 4.0), squeeze=False)
    im = None
    for ax, (v, p) in zip(axes[0], npz_paths.items()):
        with np.load(p) as z:
            m = z["sink_scores_mean"]
        im = ax.imshow(m, vmin=0, vmax=1, cmap="Greys", aspect="auto", interpolation="nearest")
        ax.set(xlabel="head", ylabel="layer")
        ax.set_xticks(pick_indices(m.shape[1], 16))
        ax.set_yticks(pick_indices(m.shape[0], 12))
        ax.set_title(f"{label_of(v)} (mean {np.nanmean(m):.3f})", color=color(v), fontweight="bold")
        ax.grid(False)
        if m.size <= 256:
            for (i, j), val in np.ndenumerate(m):
                ax.text(j, i, f"{val:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if val > 0.55 else "black")
    fig.colorbar(im, ax=list(axes[0]), label="mean attention on first token")
    fig.suptitle("Sink score per head (averaged over documents)")
    return save_figure(fig, out, "Sink score = mean over real query positions of the weight on key 0 (BOS).")


def plot_length_sweep(json_paths: Mapping[str, str | Path], out) -> list[Path] | None:
    """Sink rate and sparsity vs truncation length (None when no summary has a sweep)."""
    sums = {v: load_json(p) for v, p in json_paths.items()}
    if not any(s.get("length_sweep") for s in sums.values()):
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.0))
    for v, s in sums.items():
        sw = s.get("length_sweep") or []
        if not sw:
            continue
        x = [r["length"] for r in sw]
        for e in sw[0]["sink_rate"]:
            ax.plot(x, [num(r["sink_rate"][e]) for r in sw], _EPS_STYLE.get(e, ":"), marker="o", ms=4,
                    color=color(v), lw=1.8, label=f"{label_of(v)}, ε={e}")
        ax2.plot(x, [num(r["sparsity_exact_zero_pct"]) for r in sw], "-o", ms=4, color=color(v), lw=1.8,
                 label=f"{label_of(v)}, exactly 0")
        ax2.plot(x, [num(r["sparsity_le_threshold_pct"]) for r in sw], "--", color=color(v), lw=1.2,
                 label=f"{label_of(v)}, |a| ≤ 1e-5")
    lengths = sorted({r["length"] for s in sums.values() for r in (s.get("length_sweep") or [])})
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xticks(lengths, [str(x) for x in lengths])
        a.minorticks_off()
        a.set_ylim(-3, 103)
        a.legend(fontsize=8, handlelength=3.5)
    ax.set(xlabel="document truncation length (tokens)", ylabel="sink rate (%)", title="Sink rate vs context length")
    ax2.set(xlabel="document truncation length (tokens)", ylabel="% of causal entries", title="Sparsity vs context length")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, out, "Each point re-runs the same documents truncated to that length.")


def _draw_scores(inputs, out, run_label="ours"):
    return plot_sink_scores(inputs["analysis_npz"], out)


def _draw_rate(inputs, out, run_label="ours"):
    return plot_sink_rate(inputs["analysis_json"], out)


def _draw_sweep(inputs, out, run_label="ours"):
    return plot_length_sweep(inputs["analysis_json"], out)


FIGURES = (
    Figure("sink_scores_heads", "figure", "sink_scores_heads.rst", "Analysis", ("analysis_npz",), _draw_scores),
    Figure("sink_rate_per_layer", "figure", "sink_rate_per_layer.rst", "Analysis", ("analysis_json",), _draw_rate),
    Figure("length_sweep", "figure", "length_sweep.rst", "Analysis", ("analysis_json",), _draw_sweep),
)
