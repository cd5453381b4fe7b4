"""Figures and tables of the softpick reproduction (matplotlib, Agg backend).

Every figure is written as PNG (dpi 150) and PDF, every table as Markdown and LaTeX, each file
atomically (temporary file in the target directory + os.replace). Colours are fixed per
variant (`COLORS`): softmax vermillion, softpick blue, everywhere.

Inputs are the pipeline's result files:
  train_log.jsonl   one JSON per line: {"step", "loss", "lr", "grad_norm", "tokens_per_s", "tokens"[, "val_loss"]}
  analysis.json/.npz   written by softpick.analysis.run_analysis
  eval JSON         {"tasks": {task: {"acc", "acc_norm", "acc_stderr"}}, "perplexity": {"word_perplexity",
                    "byte_perplexity", "bits_per_byte"}}; quantized ones add "quantization": {"bits", ...}
Output paths are given without or with a suffix; the suffix is replaced by .png/.pdf (.md/.tex).
"""
from __future__ import annotations

import glob
import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from .atomic import atomic_path

__all__ = [
    "COLORS", "PAPER_ANALYSIS_REFERENCE", "PAPER_ANALYSIS_REFERENCE_10K", "DEFAULT_LAYOUT",
    "plot_training_loss", "plot_attention_maps", "plot_hidden_states", "plot_sink_rate",
    "plot_sink_scores", "plot_length_sweep", "plot_quantization",
    "write_analysis_table", "write_eval_table", "write_quant_table", "make_all",
]

# Okabe-Ito colour-blind-safe palette. softmax and softpick keep their colours in every figure.
COLORS: dict[str, str] = {
    "softmax": "#D55E00",          # vermillion
    "softpick": "#0072B2",         # blue
    "scaled_softpick": "#56B4E9",  # sky blue
    "rectified_softmax": "#E69F00",
    "softmax_plus_one": "#CC79A7",
    "gated": "#009E73",
    "learned_sink": "#999999",
}
_FALLBACK = ["#009E73", "#F0E442", "#CC79A7", "#56B4E9", "#E69F00", "#000000"]
LABELS = {"softmax": "softmax", "softpick": "softpick"}

# Reference numbers from PAPER.md, "Code-measured analysis numbers": measured by the authors'
# analysis scripts (result files of their public code, not the PDF) on their 340M / 1.8B models
# trained 100k steps x 524k tokens on FineWeb-Edu; 1000 validation docs, fp16, len 4096 (2048 for
# 1.8B). A DIFFERENT SCALE from our runs: for orientation only. The |a| <= 1e-5 sparsity was not
# reported (None); max_abs = max(|min|, |max|).
PAPER_ANALYSIS_REFERENCE: list[dict] = [
    {"model": "340M softmax (paper code, 100k steps, len 4096)", "variant": "softmax", "sink_0.2": 68.53,
     "sink_0.3": 63.41, "kurtosis": 27962.8, "min": -207.75, "max": 285.75, "max_abs": 285.75,
     "sparsity_zero": 0.92, "sparsity_le": None},
    {"model": "340M softpick (paper code, 100k steps, len 4096)", "variant": "softpick", "sink_0.2": 0.0,
     "sink_0.3": 0.0, "kurtosis": 325.1, "min": -50.88, "max": 56.13, "max_abs": 56.13,
     "sparsity_zero": 94.46, "sparsity_le": None, "note": "sink ε=0.2 reported as ≈0.00"},
    {"model": "1.8B softmax (paper code, len 2048)", "variant": "softmax", "sink_0.2": 44.41, "sink_0.3": 16.14,
     "kurtosis": 59249.5, "min": -176.88, "max": 378.75, "max_abs": 378.75, "sparsity_zero": 0.31,
     "sparsity_le": None},
    {"model": "1.8B softpick (paper code, len 2048)", "variant": "softpick", "sink_0.2": 0.003, "sink_0.3": 0.0001,
     "kurtosis": 2277.7, "min": -74.25, "max": 105.06, "max_abs": 105.06, "sparsity_zero": 96.41,
     "sparsity_le": None},
]
# PAPER.md, 340M after 10k steps, len 4096 (min not reported; "max" is the reported maximum).
PAPER_ANALYSIS_REFERENCE_10K: list[dict] = [
    {"model": "340M softmax (paper code, 10k steps)", "variant": "softmax", "sink_0.2": 35.97, "sink_0.3": 24.61,
     "kurtosis": 2456.0, "min": None, "max": 178.9, "max_abs": None, "sparsity_zero": 0.83, "sparsity_le": None},
    {"model": "340M softpick (paper code, 10k steps)", "variant": "softpick", "sink_0.2": 0.024, "sink_0.3": 0.002,
     "kurtosis": 216.0, "min": None, "max": 25.4, "max_abs": None, "sparsity_zero": 93.78, "sparsity_le": None},
]
PAPER_REFERENCE_SOURCE = ("PAPER.md, 'Code-measured analysis numbers' (authors' analysis scripts, arXiv 2504.20966; "
                          "340M/1.8B models, 100k steps x 524k tokens: a different scale from ours)")

# Where make_all looks for result files, relative to run_dir ({variant} is substituted).
DEFAULT_LAYOUT: dict[str, str] = {
    "train_log": "{variant}/train_log.jsonl",
    "analysis_json": "{variant}/analysis.json",
    "analysis_npz": "{variant}/analysis.npz",
    "eval": "{variant}/eval.json",
    "quant_glob": "{variant}/quant/*.json",
}

plt.rcParams.update({
    "figure.dpi": 100, "savefig.dpi": 150, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.25, "grid.linewidth": 0.6, "legend.frameon": False,
})


# ---------------------------------------------------------------------------------------- utils
def color(variant: str) -> str:
    if variant in COLORS:
        return COLORS[variant]
    return _FALLBACK[sum(map(ord, variant)) % len(_FALLBACK)]


def _label(variant: str) -> str:
    return LABELS.get(variant, variant.replace("_", " "))


def _atomic_write(path: Path, writer) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def _write_text(path: Path, text: str) -> None:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(path, w)


def _stem(out) -> Path:
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in {".png", ".pdf", ".md", ".tex"} else out


def save_figure(fig, out, caption: str | None = None) -> list[Path]:
    """Save `fig` as <out>.png (dpi 150) and <out>.pdf atomically; close it. Returns both paths."""
    if caption:
        fig.text(0.01, -0.005, caption, ha="left", va="top", fontsize=8, color="#444444", style="italic", wrap=True)
    stem = _stem(out)
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_name(stem.name + "." + ext)
        _atomic_write(p, lambda tmp, ext=ext: fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight"))
        paths.append(p)
    plt.close(fig)
    return paths


def _load_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_jsonl(path) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a partially written last line
    return out


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


def _num(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


# -------------------------------------------------------------------------------- training loss
def plot_training_loss(logs: Mapping[str, str | Path], out, ema: float = 0.9) -> list[Path]:
    """Training loss (raw faint + EMA) and validation loss vs tokens, and grad norm, per variant."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    use_tokens = True
    recs = {v: _read_jsonl(p) for v, p in logs.items()}
    if any(not any("tokens" in r for r in rs) for rs in recs.values()):
        use_tokens = False
    final = []
    for v, rs in recs.items():
        tr = [r for r in rs if "loss" in r and r.get("loss") is not None]
        c = color(v)
        if tr:
            x = np.array([r["tokens"] if use_tokens else r["step"] for r in tr], dtype=float)
            x = x / 1e6 if use_tokens else x
            y = np.array([_num(r["loss"]) for r in tr])
            ax.plot(x, y, color=c, alpha=0.22, lw=0.8)
            sm = _ema(y, ema)
            ax.plot(x, sm, color=c, lw=2.0, label=f"{_label(v)} train (EMA)")
            final.append(f"{_label(v)} {sm[-1]:.3f}")
            g = np.array([_num(r.get("grad_norm")) for r in tr])
            if np.isfinite(g).any():
                ax2.plot(x, g, color=c, alpha=0.25, lw=0.8)
                ax2.plot(x, _ema(g, ema), color=c, lw=1.8, label=_label(v))
        va = [r for r in rs if r.get("val_loss") is not None]
        if va:
            x = np.array([r["tokens"] if use_tokens else r["step"] for r in va], dtype=float)
            x = x / 1e6 if use_tokens else x
            ax.plot(x, [_num(r["val_loss"]) for r in va], "o--", color=c, ms=5, lw=1.2, mfc="white",
                    mew=1.5, label=f"{_label(v)} validation")
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


# ------------------------------------------------------------------------------ attention maps
def _pick(n: int, k: int) -> list[int]:
    if n <= k:
        return list(range(n))
    return sorted(set(int(round(i)) for i in np.linspace(0, n - 1, k)))


def plot_attention_maps(npz_path, out, variant: str, max_layers: int = 6, max_heads: int = 6,
                        crop: int = 64, vmin: float = 1e-4) -> list[Path]:
    """Grid (layers x heads) of the example document's attention maps on a log colour scale.

    Exact zeros (inside the causal triangle) are drawn white, the masked upper triangle light
    grey, so softpick's exact-zero sparsity is visible against small-but-nonzero weights.
    """
    with np.load(npz_path) as z:
        maps = z["attn_example"]
    L, H, T, _ = maps.shape
    t = min(crop, T)
    layers, heads = _pick(L, max_layers), _pick(H, max_heads)
    fig, axes = plt.subplots(len(layers), len(heads), figsize=(1.7 * len(heads) + 1.2, 1.7 * len(layers) + 1.0),
                             squeeze=False)
    cmap = plt.get_cmap("magma").with_extremes(bad=(0, 0, 0, 0))  # masked cells: transparent
    under = mcolors.ListedColormap(["white", "#d9d9d9"]).with_extremes(bad=(0, 0, 0, 0))
    norm = mcolors.LogNorm(vmin=vmin, vmax=1.0)
    tri = np.tril(np.ones((t, t), bool))
    n_zero = n_tri = 0
    im = None
    for i, l in enumerate(layers):
        for j, h in enumerate(heads):
            ax = axes[i, j]
            a = maps[l, h, :t, :t].astype(float)
            zero = (a == 0) & tri
            n_zero += int(zero.sum()); n_tri += int(tri.sum())
            shown = np.ma.masked_where(zero | ~tri, np.clip(a, vmin, 1.0))
            # background layer: white = exact zero inside the causal triangle, grey = future (masked)
            ax.imshow(np.where(~tri, 1.0, np.where(zero, 0.0, np.nan)), cmap=under, vmin=0, vmax=1,
                      interpolation="nearest")
            im = ax.imshow(shown, cmap=cmap, norm=norm, interpolation="nearest")
            ax.set_xticks([]); ax.set_yticks([]); ax.grid(False)
            for s in ax.spines.values():
                s.set_visible(True); s.set_linewidth(0.5); s.set_color("#999999")
            if i == 0:
                ax.set_title(f"head {h}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"layer {l}", fontsize=9)
    fig.suptitle(f"Attention maps, {_label(variant)} (first {t} tokens of the example document)",
                 color=color(variant), fontsize=12, fontweight="bold")
    fig.tight_layout(rect=(0, 0.06, 0.9, 0.97))
    cax = fig.add_axes([0.92, 0.2, 0.015, 0.6])
    cb = fig.colorbar(im, cax=cax, extend="min")
    cb.set_label("attention weight (log scale)")
    cap = (f"Rows = queries, columns = keys (key 0 = BOS). White = exactly 0 "
           f"({100 * n_zero / max(n_tri, 1):.1f}% of the causal entries shown); grey = masked (future) positions; "
           f"weights < {vmin:g} are clipped to the darkest colour.")
    return save_figure(fig, out, cap)


# ----------------------------------------------------------------------------- hidden states
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
        ticks = _pick(L2, 8)
        ax.set_yticks(ticks, [("emb" if t == 0 else "out" if t == L2 - 1 else str(t - 1)) for t in ticks])
        ax.set(xlabel="channel", ylabel="hidden state" if i == 0 else None)
        ax.set_title(f"{_label(v)}: max |h| per channel\n(example doc; peak {np.nanmax(m):.1f})",
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
        ax.stairs(np.where(frac > 0, frac, np.nan), e, color=color(v), lw=1.8, label=_label(v))
    ax.set(xscale="log", yscale="log", xlabel="|h| (all hidden states, all docs)", ylabel="fraction of values",
           title="Distribution of |hidden-state values|")
    ax.legend()
    ax = fig.add_subplot(gs[1, 1])
    for v, d in data.items():
        tv = np.abs(d["topk_values"][:, 0])
        xs = np.arange(len(tv))
        ax.plot(xs, tv, "o-", color=color(v), lw=1.8, ms=4, label=f"{_label(v)} (max {np.nanmax(tv):.1f})")
        ax.set_xticks(_pick(len(tv), 10), [("emb" if t == 0 else "out" if t == len(tv) - 1 else str(t - 1))
                                            for t in _pick(len(tv), 10)])
    ax.set(yscale="log", xlabel="hidden state (emb = embedding, out = final norm)", ylabel="largest |h| over all docs",
           title="Largest activation per layer")
    ax.legend()
    cap = "Rows: emb = embedding output, 0..L-1 = residual stream after each layer, out = final normed output. Massive activations show up as a few bright channels (top) and as a heavy right tail / high per-layer maximum (bottom)."
    return save_figure(fig, out, cap)


# ------------------------------------------------------------------------------- sink rate
_EPS_STYLE = {"0.3": "-", "0.2": "--"}


def plot_sink_rate(json_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Per-layer sink rate (ε = 0.2 dashed, 0.3 solid) and per-layer sparsity, softmax vs softpick."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for v, p in json_paths.items():
        s = _load_json(p)
        for e, ys in s["sink_rate_per_layer"].items():
            ys = np.array([_num(y) for y in ys])
            ax.plot(np.arange(len(ys)), ys, _EPS_STYLE.get(e, ":"), marker="o", ms=4, color=color(v), lw=1.8,
                    label=f"{_label(v)}, ε={e} (all layers {_num(s['sink_rate'][e]):.2f}%)")
        sp = s["sparsity_per_layer"]
        ax2.plot(np.arange(len(sp["exact_zero_pct"])), [_num(x) for x in sp["exact_zero_pct"]], "-o", ms=4,
                 color=color(v), lw=1.8, label=f"{_label(v)}, exactly 0 ({_num(s['sparsity']['exact_zero_pct']):.1f}%)")
        ax2.plot(np.arange(len(sp["le_threshold_pct"])), [_num(x) for x in sp["le_threshold_pct"]], "--", color=color(v),
                 lw=1.2, label=f"{_label(v)}, |a| ≤ {s['sparsity'].get('threshold', 1e-5):g}")
    ax.set(xlabel="layer", ylabel="sink rate (% of head × doc pairs)", title="Attention sink rate per layer", ylim=(-3, 103))
    ax.legend(fontsize=8, handlelength=3.5)
    ax2.set(xlabel="layer", ylabel="% of causal attention entries", title="Attention sparsity per layer", ylim=(-3, 103))
    ax2.legend(fontsize=8, handlelength=3.5)
    for a in (ax, ax2):
        a.xaxis.get_major_locator().set_params(integer=True)
    cap = ("Sink rate: % of (head, doc) pairs whose mean attention on the first token exceeds ε (padded queries excluded). "
           "Sparsity: causal lower triangle incl. diagonal.")
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
        ax.set_xticks(_pick(m.shape[1], 16))
        ax.set_yticks(_pick(m.shape[0], 12))
        ax.set_title(f"{_label(v)} (mean {np.nanmean(m):.3f})", color=color(v), fontweight="bold")
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
    sums = {v: _load_json(p) for v, p in json_paths.items()}
    if not any(s.get("length_sweep") for s in sums.values()):
        return None
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.0))
    for v, s in sums.items():
        sw = s.get("length_sweep") or []
        if not sw:
            continue
        x = [r["length"] for r in sw]
        for e in sw[0]["sink_rate"]:
            ax.plot(x, [_num(r["sink_rate"][e]) for r in sw], _EPS_STYLE.get(e, ":"), marker="o", ms=4,
                    color=color(v), lw=1.8, label=f"{_label(v)}, ε={e}")
        ax2.plot(x, [_num(r["sparsity_exact_zero_pct"]) for r in sw], "-o", ms=4, color=color(v), lw=1.8,
                 label=f"{_label(v)}, exactly 0")
        ax2.plot(x, [_num(r["sparsity_le_threshold_pct"]) for r in sw], "--", color=color(v), lw=1.2,
                 label=f"{_label(v)}, |a| ≤ 1e-5")
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


# ---------------------------------------------------------------------------- quantization
def _mean_acc(ev: dict, metric: str = "acc") -> float:
    vals = [_num(t.get(metric)) for t in ev.get("tasks", {}).values() if t.get(metric) is not None]
    vals = [x for x in vals if math.isfinite(x)]
    return float(np.mean(vals)) if vals else float("nan")


# The panels of the quantization figure and the columns of its table (the paper's Fig. 3, Tables 8-10):
# (key, label, getter, log scale, higher is better).
QUANT_METRICS: list[tuple[str, str, object, bool, bool]] = [
    ("arc_easy", "ARC-e acc_norm (%)", lambda e: _task_metric(e, "arc_easy", "acc_norm", 100), False, True),
    ("piqa", "PIQA acc_norm (%)", lambda e: _task_metric(e, "piqa", "acc_norm", 100), False, True),
    ("sciq", "SciQ acc_norm (%)", lambda e: _task_metric(e, "sciq", "acc_norm", 100), False, True),
    ("word_ppl", "held-out word perplexity", lambda e: (e.get("perplexity") or {}).get("word_perplexity"), True, False),
    ("lambada_ppl", "LAMBADA perplexity", lambda e: _task_metric(e, "lambada", "perplexity"), True, False),
]


def _task_metric(ev: dict, task: str, metric: str, scale: float = 1.0):
    v = (ev.get("tasks") or {}).get(task, {}).get(metric)
    return None if v is None else scale * _num(v)


def _bits_of(ev: dict):
    q = ev.get("quantization") or {}
    return q.get("bits")


def _method_of(ev: dict) -> str:
    return (ev.get("quantization") or {}).get("method", "")


def _quant_series(float_eval: Mapping[str, str | Path], quant_evals: Mapping[str, Sequence[str | Path]]):
    """{(method, variant): [("float" | bits, eval dict)]}: the float model first, then bits descending."""
    series: dict[tuple[str, str], list] = {}
    variants = list(float_eval) + [v for v in quant_evals if v not in float_eval]
    loaded = {v: [_load_json(p) for p in quant_evals.get(v, [])] for v in variants}
    methods = sorted({_method_of(q) for qs in loaded.values() for q in qs})
    for m in methods:
        for v in variants:
            pts = [("float", _load_json(float_eval[v]))] if v in float_eval else []
            pts += sorted([(_bits_of(q), q) for q in loaded[v] if _method_of(q) == m], key=lambda t: -_num(t[0]))
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
    all_bits = sorted({_num(b) for pts in series.values() for b, _ in pts if b != "float"}, reverse=True)
    xpos = {"float": 0, **{b: i + 1 for i, b in enumerate(all_bits)}}
    xt = ["float"] + [f"{int(b) if float(b).is_integer() else b}" for b in all_bits]
    methods = sorted({m for m, _ in series})
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.3 * len(metrics), 3.6), squeeze=False)
    for ax, (_, label, get, log, _) in zip(axes[0], metrics):
        for (m, v), pts in series.items():
            ls, mk = _METHOD_STYLES[methods.index(m) % len(_METHOD_STYLES)]
            xy = [(xpos["float" if b == "float" else _num(b)], get(e)) for b, e in pts]
            xy = [(x, _num(y)) for x, y in xy if y is not None and math.isfinite(_num(y))]
            if xy:
                ax.plot(*zip(*xy), linestyle=ls, marker=mk, ms=5, lw=1.6, color=color(v), label=f"{_label(v)} · {m}")
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


# --------------------------------------------------------------------------------- tables
def _fmt(x, kind: str = "num") -> str:
    if x is None:
        return "—"
    x = _num(x)
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


def _tables(header: list[str], rows: list[list[str]], caption: str, label: str, out, groups: list[int] | None = None,
            notes: str = "") -> list[Path]:
    """Write <out>.md and <out>.tex; `groups` = row indices before which a midrule is drawn."""
    stem = _stem(out)
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
    _write_text(paths[0], "\n".join(md) + "\n")
    _write_text(paths[1], "\n".join(tex) + "\n")
    return paths


def write_analysis_table(json_paths: Mapping[str, str | Path], out, run_label: str = "ours",
                         include_reference: bool = True) -> list[Path]:
    """Analysis table for our models beside the paper's code-measured numbers (PAPER.md)."""
    header = ["model", "sink % ε=0.2", "sink % ε=0.3", "kurtosis", "min", "max", "max |·|",
              "sparsity % (=0)", "sparsity % (≤1e-5)"]
    rows, groups = [], [0]
    for v, p in json_paths.items():
        s = _load_json(p)
        sr = s.get("sink_rate", {})
        sp = s.get("sparsity", {})
        name = f"{_label(v)} ({run_label}, {s.get('num_docs', '?')} docs, len {s.get('max_len', '?')})"
        rows.append([name, _fmt(sr.get("0.2"), "pct"), _fmt(sr.get("0.3"), "pct"), _fmt(s.get("kurtosis"), "kurt"),
                     _fmt(s.get("min")), _fmt(s.get("max")), _fmt(s.get("max_abs")),
                     _fmt(sp.get("exact_zero_pct"), "pct"), _fmt(sp.get("le_threshold_pct"), "pct")])
    notes = ""
    if include_reference:
        for ref in (PAPER_ANALYSIS_REFERENCE, PAPER_ANALYSIS_REFERENCE_10K):
            groups.append(len(rows))
            for r in ref:
                rows.append([r["model"] + " †", _fmt(r["sink_0.2"], "pct"), _fmt(r["sink_0.3"], "pct"),
                             _fmt(r["kurtosis"], "kurt"), _fmt(r["min"]), _fmt(r["max"]), _fmt(r["max_abs"]),
                             _fmt(r["sparsity_zero"], "pct"), _fmt(r["sparsity_le"], "pct")])
        notes = ("† Reference, different scale (340M / 1.8B parameters, 100k steps × 524k tokens; 10k-step rows "
                 "as marked): " + PAPER_REFERENCE_SOURCE + ". — = not reported.")
    return _tables(header, rows, "Attention sink, massive activations and sparsity", "tab:analysis", out, groups, notes)


def write_eval_table(eval_paths: Mapping[str, str | Path], out, acc_metric: str = "acc") -> list[Path]:
    """Zero-shot accuracy per task (± stderr where given) and perplexities, one row per variant."""
    evs = {v: _load_json(p) for v, p in eval_paths.items()}
    tasks = sorted({t for e in evs.values() for t in e.get("tasks", {})})
    pkeys = [k for k in ("word_perplexity", "byte_perplexity", "bits_per_byte")
             if any(k in (e.get("perplexity") or {}) for e in evs.values())]
    header = ["model"] + tasks + ["mean acc"] + [k.replace("_", " ") for k in pkeys]
    rows = []
    for v, e in evs.items():
        r = [_label(v)]
        for t in tasks:
            d = e.get("tasks", {}).get(t, {})
            a, se = d.get(acc_metric), d.get(f"{acc_metric}_stderr")
            r.append("—" if a is None else (f"{100 * _num(a):.1f}" + (f" ± {100 * _num(se):.1f}" if se is not None else "")))
        r.append(f"{100 * _mean_acc(e, acc_metric):.1f}")
        r += [_fmt((e.get("perplexity") or {}).get(k), "ppl") for k in pkeys]
        rows.append(r)
    return _tables(header, rows, f"Zero-shot evaluation ({acc_metric}, %) and perplexity", "tab:eval", out,
                   notes="Accuracy in % (± standard error); perplexity lower is better.")


def write_quant_table(float_eval: Mapping[str, str | Path], quant_evals: Mapping[str, Sequence[str | Path]], out) -> list[Path]:
    """One row per method × bits (and the float model): every metric per variant, and Δ = softpick − softmax."""
    series = _quant_series(float_eval, quant_evals)
    metrics = _present_metrics(series)
    variants = list(dict.fromkeys(v for _, v in series))
    delta = "softmax" in variants and "softpick" in variants
    header = ["method", "bits"]
    for _, label, *_ in metrics:
        short = label.replace(" (%)", "").replace("held-out ", "")
        header += [f"{short} {_label(v)}" for v in variants] + ([f"{short} Δ"] if delta else [])
    rows_by_key: dict[tuple, dict] = {}
    for (m, v), pts in series.items():
        for b, e in pts:
            key = ("float", "float") if b == "float" else (m, b)
            rows_by_key.setdefault(key, {})[v] = e
    order = [("float", "float")] + sorted((k for k in rows_by_key if k[0] != "float"), key=lambda k: (k[0], -_num(k[1])))
    rows, groups, prev = [], [], None
    for key in order:
        if key not in rows_by_key:
            continue
        if key[0] != prev:
            groups.append(len(rows))
            prev = key[0]
        evs = rows_by_key[key]
        r = [key[0], str(key[1])]
        for _, _, get, log, _ in metrics:
            vals = {v: (get(evs[v]) if v in evs else None) for v in variants}
            kind = "ppl" if log else "num"
            r += [_fmt(vals[v], kind) for v in variants]
            if delta:
                a, c = vals["softmax"], vals["softpick"]
                r.append("—" if a is None or c is None else f"{_num(c) - _num(a):+,.2f}")
        rows.append(r)
    notes = ("Δ = softpick − softmax (accuracy: positive favours softpick; perplexity: negative favours softpick). "
             "acc_norm in %; perplexity lower is better; — = not measured." if delta else "")
    return _tables(header, rows, "Post-training quantization: acc_norm (%) and perplexity", "tab:quant", out, groups, notes)


# --------------------------------------------------------------------------------- make_all
def make_all(run_dir, fig_dir, variants: Sequence[str] = ("softmax", "softpick"), layout: Mapping[str, str] | None = None,
             table_dir=None, run_label: str | None = None, strict: bool = False) -> list[Path]:
    """Produce every figure and table for which result files exist; return the written paths.

    Files are found under run_dir by `layout` (DEFAULT_LAYOUT keys, `{variant}` substituted;
    "quant_glob" is a glob). Tables go to table_dir (default fig_dir). A figure whose inputs
    are missing for every variant is skipped (an error if strict).
    """
    run_dir, fig_dir = Path(run_dir), Path(fig_dir)
    table_dir = Path(table_dir) if table_dir else fig_dir
    lay = {**DEFAULT_LAYOUT, **(layout or {})}
    run_label = run_label or run_dir.name

    def found(key):
        out = {}
        for v in variants:
            p = run_dir / lay[key].format(variant=v)
            if p.exists():
                out[v] = p
            elif strict:
                raise FileNotFoundError(p)
        return out

    logs, ajs, anz, evs = found("train_log"), found("analysis_json"), found("analysis_npz"), found("eval")
    quant = {v: sorted(glob.glob(str(run_dir / lay["quant_glob"].format(variant=v)))) for v in variants}
    quant = {v: q for v, q in quant.items() if q}
    written: list[Path] = []
    if logs:
        written += plot_training_loss(logs, fig_dir / "training_loss")
    for v, p in anz.items():
        written += plot_attention_maps(p, fig_dir / f"attention_maps_{v}", v)
    if anz:
        written += plot_hidden_states(anz, fig_dir / "hidden_states")
        written += plot_sink_scores(anz, fig_dir / "sink_scores_heads")
    if ajs:
        written += plot_sink_rate(ajs, fig_dir / "sink_rate_per_layer")
        written += plot_length_sweep(ajs, fig_dir / "length_sweep") or []
        written += write_analysis_table(ajs, table_dir / "analysis_table", run_label)
    if evs:
        written += write_eval_table(evs, table_dir / "eval_table")
    if quant:
        written += plot_quantization(evs, quant, fig_dir / "quantization")
        written += write_quant_table(evs, quant, table_dir / "quant_table")
    return written


def main(argv=None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Make all figures and tables of a run")
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--fig-dir", required=True)
    ap.add_argument("--table-dir")
    ap.add_argument("--variants", nargs="+", default=["softmax", "softpick"])
    a = ap.parse_args(argv)
    for p in make_all(a.run_dir, a.fig_dir, a.variants, table_dir=a.table_dir):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
