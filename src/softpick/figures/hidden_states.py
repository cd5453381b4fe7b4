"""Massive activations: max |h| per layer and channel, the |h| distribution and the largest value per layer
(results/<run>/analysis/<variant>.npz), and per-layer box plots of the hidden-state values (the paper's Fig. 4;
the npz's "hidden_sample" with the analysis JSON's exact extremes), softpick.analysis."""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib import colors as mcolors

from .base import Figure
from .results import load_json
from .style import color, label_of, num, pick_indices, plt, save_figure


def plot_hidden_states(npz_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Massive activations: layer x channel max|h| heatmaps (one per variant, shared log scale),
    the |h| histogram pooled over all docs and hidden states, and the largest |h| per layer."""
    data = {}
    for v, p in npz_paths.items():
        with np.load(p) as z:
            data[v] = {k: z[k] for k in ("hidden_max_abs_channel", "hist_counts", "hist_edges", "topk_values")}
    n = len(data)
    fig = plt.figure(figsize=(5.2 * max(n, 2), 8.2))
    gs = fig.add_gridspec(2, max(n, 2), height_ratios=[1, 1], hspace=0.45, wspace=0.28)
    vmax = max(float(np.nanmax(d["hidden_max_abs_channel"])) for d in data.values())
    vmin = max(min(float(np.nanmin(d["hidden_max_abs_channel"][d["hidden_max_abs_channel"] > 0]))
                   for d in data.values()), vmax * 1e-4)
    norm = mcolors.LogNorm(vmin=vmin, vmax=vmax)
    im = None
    for i, (v, d) in enumerate(data.items()):
        ax = fig.add_subplot(gs[0, i])
        m = d["hidden_max_abs_channel"]
        im = ax.imshow(np.clip(m, vmin, None), aspect="auto", cmap="viridis", norm=norm, interpolation="nearest")
        L2 = m.shape[0]
        ticks = pick_indices(L2, 8)
        ax.set_yticks(ticks, [("emb" if t == 0 else "out" if t == L2 - 1 else str(t - 1)) for t in ticks])
        ax.set(xlabel="channel", ylabel="hidden state" if i == 0 else None)
        ax.set_title(f"{label_of(v)}: max |h| per channel\n(example doc; peak {np.nanmax(m):.1f})",
                     color=color(v), fontweight="bold")
        ax.grid(False)
    fig.colorbar(im, ax=fig.axes[:n], shrink=0.9, label="max |h|")

    ax = fig.add_subplot(gs[1, 0])
    for v, d in data.items():
        e = d["hist_edges"]
        c = d["hist_counts"].sum(axis=0).astype(float)
        # interior bins [e_{i-1}, e_i): i = 1..len(e)-1; density per log-bin
        ci = c[1:len(e)]
        frac = ci / max(c.sum(), 1)
        ax.stairs(np.where(frac > 0, frac, np.nan), e, color=color(v), lw=1.8, label=label_of(v))
    ax.set(xscale="log", yscale="log", xlabel="|h| (all hidden states, all docs)", ylabel="fraction of values",
           title="Distribution of |hidden-state values|")
    ax.legend()
    ax = fig.add_subplot(gs[1, 1])
    for v, d in data.items():
        tv = np.abs(d["topk_values"][:, 0])
        xs = np.arange(len(tv))
        ax.plot(xs, tv, "o-", color=color(v), lw=1.8, ms=4, label=f"{label_of(v)} (max {np.nanmax(tv):.1f})")
        ax.set_xticks(pick_indices(len(tv), 10), [("emb" if t == 0 else "out" if t == len(tv) - 1 else str(t - 1))
                                            for t in pick_indices(len(tv), 10)])
    ax.set(yscale="log", xlabel="hidden state (emb = embedding, out = final norm)", ylabel="largest |h| over all docs",
           title="Largest activation per layer")
    ax.legend()
    cap = "Rows: emb = embedding output, 0..L-1 = residual stream after each layer, out = final normed output. Massive activations show up as a few bright channels (top) and as a heavy right tail / high per-layer maximum (bottom)."
    return save_figure(fig, out, cap)


def _state_labels(n: int) -> list[str]:
    """emb, 0 .. n-3, out: the hidden states of the analysis (embedding, after each layer, final norm)."""
    return ["emb"] + [str(i) for i in range(n - 2)] + ["out"]


def _thin(x: np.ndarray, k: int) -> np.ndarray:
    """At most k values of x: the most extreme k // 2 by |x| and an evenly spaced pick of the rest (deterministic)."""
    if x.size <= k:
        return x
    order = np.argsort(-np.abs(x), kind="stable")
    head, rest = order[: k // 2], np.sort(order[k // 2:])
    pick = rest[np.linspace(0, rest.size - 1, k - head.size).astype(int)]
    return x[np.concatenate([head, pick])]


JITTER_SEED = 0  # the outlier dots' horizontal jitter in plot_hidden_box


@contextlib.contextmanager
def _seeded_global_rng(seed: int):
    """numpy's global RNG seeded with `seed` inside, the caller's state restored after: seaborn's stripplot
    draws its jitter from np.random.uniform and takes no seed (0.13), so this makes the same inputs give the
    same picture without disturbing anyone else's draws."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def _box_linthresh(samples: Sequence[np.ndarray]) -> float:
    """Linear range of the symlog axis: the median over hidden states of the larger |quartile| (boxes stay linear)."""
    ext = []
    for smp in samples:
        for row in smp:
            x = row[~np.isnan(row)]
            if x.size:
                q1, q3 = np.quantile(x, [0.25, 0.75])
                ext.append(max(abs(q1), abs(q3)))
    ext = [e for e in ext if e > 0]
    return float(10 ** np.floor(np.log10(np.median(ext)))) if ext else 1.0


def plot_hidden_box(json_paths: Mapping[str, str | Path], npz_paths: Mapping[str, str | Path], out,
                    max_outliers: int = 120, linthresh: float | None = None) -> list[Path] | None:
    """Per-layer box plots of the hidden-state values (the paper's Fig. 4), one panel per variant, shared
    symlog y axis (linear within ±linthresh; None = a power of ten near the typical box). Boxes: quartiles
    and 1.5 IQR whiskers of each hidden state's sample (analysis `hidden_sample`); dots: up to max_outliers
    of the sample's outliers (jittered sideways from a fixed seed: the same inputs give the same PNG); diamonds: the exact min and max over every analysed value. None when no npz
    holds a hidden_sample."""
    import pandas as pd
    import seaborn as sns

    data = {}
    for v, p in npz_paths.items():
        with np.load(p) as z:
            if "hidden_sample" in z.files:
                data[v] = z["hidden_sample"]
    if not data:
        return None
    sums = {v: load_json(json_paths[v]) for v in data if v in json_paths}
    linthresh = linthresh or _box_linthresh(list(data.values()))
    n = len(data)
    fig, axes = plt.subplots(1, n, figsize=(max(5.0, 0.42 * max(a.shape[0] for a in data.values()) + 2.0) * n, 4.8),
                             sharey=True, squeeze=False)
    notes = []
    for ax, (v, smp) in zip(axes[0], data.items()):
        labels = _state_labels(smp.shape[0])
        vals = [row[~np.isnan(row)].astype(np.float64) for row in smp]
        df = pd.DataFrame({"hidden state": np.repeat(labels, [len(x) for x in vals]), "value": np.concatenate(vals)})
        with warnings.catch_warnings():  # seaborn 0.13 passes matplotlib 3.11's deprecated `vert` to bxp
            warnings.simplefilter("ignore", matplotlib.MatplotlibDeprecationWarning)
            sns.boxplot(data=df, x="hidden state", y="value", order=labels, whis=1.5, showfliers=False, ax=ax,
                        color=color(v), width=0.6, linewidth=1.0, boxprops={"alpha": 0.55})
        s = sums.get(v, {})
        box = s.get("hidden_box") or {}
        fl = []
        for i, (lab, x) in enumerate(zip(labels, vals)):
            if box.get("whisker_lo") and box["whisker_lo"][i] is not None:
                lo, hi = box["whisker_lo"][i], box["whisker_hi"][i]
            else:
                q1, q3 = np.quantile(x, [0.25, 0.75]) if x.size else (np.nan, np.nan)
                lo, hi = q1 - 1.5 * (q3 - q1), q3 + 1.5 * (q3 - q1)
            fl += [(lab, float(y)) for y in _thin(x[(x < lo) | (x > hi)], max_outliers)]
        if fl:
            with _seeded_global_rng(JITTER_SEED):
                sns.stripplot(data=pd.DataFrame(fl, columns=["hidden state", "value"]), x="hidden state", y="value",
                              order=labels, ax=ax, color=color(v), size=2.2, alpha=0.45, jitter=0.18, zorder=3)
        per = s.get("per_hidden_state") or {}
        if per.get("min") and per.get("max") and len(per["min"]) == len(labels):
            ext = [(lab, num(per[k][i])) for i, lab in enumerate(labels) for k in ("min", "max")]
            with _seeded_global_rng(JITTER_SEED):  # jitter=False still draws zeros from the global RNG
                sns.stripplot(data=pd.DataFrame(ext, columns=["hidden state", "value"]), x="hidden state", y="value",
                              order=labels, ax=ax, color="black", marker="D", size=4, jitter=False, zorder=4)
        peak = num(s.get("max_abs")) if s else float(np.nanmax(np.abs(smp)))
        ax.set_title(f"{label_of(v)} (max |h| {peak:.1f})", color=color(v), fontweight="bold")
        ax.set(xlabel="hidden state (emb = embedding, out = final norm)", ylabel="value (symlog)" if ax is axes[0][0] else "")
        ax.set_yscale("symlog", linthresh=linthresh)
        ax.axhspan(-linthresh, linthresh, color="#eeeeee", zorder=0, lw=0)
        if len(labels) > 14:
            for t in ax.get_xticklabels():
                t.set_rotation(90)
        if box.get("exact"):
            notes.append("every value" if all(box["exact"]) else
                         f"a uniform sample of {max(box['sample_size'])} values per hidden state")
    where = (notes[0] if len(set(notes)) == 1 else
             "; ".join(f"{label_of(v)}: {t}" for v, t in zip(data, notes))) if notes else "the analysis sample"
    fig.suptitle("Hidden-state values per layer", fontsize=12)
    cap = ("Boxes: quartiles; whiskers: the most extreme value within 1.5 IQR; dots: up to "
           f"{max_outliers} outliers per hidden state (the most extreme half and an even spread of the rest); "
           f"diamonds: exact min and max over all analysed tokens; grey band: linear part (±{linthresh:g}) of the "
           f"symlog axis. Boxes drawn from {where}.")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out, cap)


def _draw_states(inputs, out, run_label="ours"):
    return plot_hidden_states(inputs["analysis_npz"], out)


def _draw_box(inputs, out, run_label="ours"):
    return plot_hidden_box(inputs.get("analysis_json", {}), inputs["analysis_npz"], out)


FIGURES = (
    Figure("hidden_states", "figure", "hidden_states.rst", "Analysis", ("analysis_npz",), _draw_states),
    Figure("hidden_state_boxplots", "figure", "hidden_state_boxplots.rst", "Analysis", ("analysis_npz",), _draw_box,
           optional=("analysis_json",)),
)
