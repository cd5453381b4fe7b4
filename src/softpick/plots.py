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
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402

from .atomic import atomic_path

__all__ = [
    "COLORS", "PAPER_ANALYSIS_REFERENCE", "PAPER_ANALYSIS_REFERENCE_10K", "PAPER_ANALYSIS_V4", "PAPER_EVAL_V4",
    "DEFAULT_LAYOUT",
    "plot_training_loss", "plot_attention_maps", "plot_hidden_states", "plot_sink_rate",
    "plot_sink_scores", "plot_length_sweep", "plot_quantization", "plot_hidden_box",
    "write_analysis_table", "write_eval_table", "write_eval_table_all", "write_quant_table", "make_all",
]

# Okabe-Ito colour-blind-safe palette. softmax and softpick keep their colours in every figure.
COLORS: dict[str, str] = {
    "softmax": "#D55E00",            # vermillion
    "softpick": "#0072B2",           # blue
    "scaled_softpick": "#56B4E9",    # sky blue
    "rectified_softmax": "#E69F00",  # orange
    "relu_softmax": "#000000",       # black
    "softmax_plus_one": "#CC79A7",   # reddish purple
    "gated": "#009E73",              # bluish green
    "learned_sink": "#999999",       # grey
}
_FALLBACK = ["#009E73", "#F0E442", "#CC79A7", "#56B4E9", "#E69F00", "#000000"]
# Display names of the attention kinds (the same as softpick.attention.kinds' labels; a test keeps them equal).
LABELS = {
    "softmax": "softmax",
    "softpick": "softpick",
    "scaled_softpick": "scaled softpick",
    "rectified_softmax": "rectified-only softmax",
    "relu_softmax": "ReLU softmax",
    "softmax_plus_one": "softmax+1",
    "gated": "gated attention",
    "learned_sink": "learned sink (GPT-OSS)",
}

# Reference numbers measured by the authors'
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
# The authors' scripts, 340M after 10k steps, len 4096 (min not reported; "max" is the reported maximum).
PAPER_ANALYSIS_REFERENCE_10K: list[dict] = [
    {"model": "340M softmax (paper code, 10k steps)", "variant": "softmax", "sink_0.2": 35.97, "sink_0.3": 24.61,
     "kurtosis": 2456.0, "min": None, "max": 178.9, "max_abs": None, "sparsity_zero": 0.83, "sparsity_le": None},
    {"model": "340M softpick (paper code, 10k steps)", "variant": "softpick", "sink_0.2": 0.024, "sink_0.3": 0.002,
     "kurtosis": 216.0, "min": None, "max": 25.4, "max_abs": None, "sparsity_zero": 93.78, "sparsity_le": None},
]
# The paper's v4 Table 2 (the paper's own numbers, cited as "the paper"),
# with the dead-head shares of v4 section 7.2 (eps 1e-6, >= 95% of 5M tokens; reported for softpick only).
# max_abs = max(|min|, |max|); sparsity = exact zeros of the causal lower triangle; T = 64 sink rate not reported.
PAPER_ANALYSIS_V4: list[dict] = [
    {"model": "340M softmax (paper v4 Table 2)", "variant": "softmax", "sink_0.2": 68.28, "sink_0.3": 63.41,
     "kurtosis": 33510.81, "min": -207.55, "max": 240.27, "max_abs": 240.27, "sparsity_zero": 4.53, "sparsity_le": None,
     "dead_1e-06": None},
    {"model": "340M softpick (paper v4 Table 2)", "variant": "softpick", "sink_0.2": 0.0, "sink_0.3": 0.0,
     "kurtosis": 340.96, "min": -45.03, "max": 36.21, "max_abs": 45.03, "sparsity_zero": 99.34, "sparsity_le": None,
     "dead_1e-06": 9.11},
    {"model": "1.8B softmax (paper v4 Table 2)", "variant": "softmax", "sink_0.2": 41.73, "sink_0.3": 14.96,
     "kurtosis": 74456.81, "min": -173.48, "max": 371.43, "max_abs": 371.43, "sparsity_zero": 4.28, "sparsity_le": None,
     "dead_1e-06": None},
    {"model": "1.8B softpick (paper v4 Table 2)", "variant": "softpick", "sink_0.2": 0.0, "sink_0.3": 0.0,
     "kurtosis": 2193.27, "min": -51.05, "max": 101.51, "max_abs": 101.51, "sparsity_zero": 95.63, "sparsity_le": None,
     "dead_1e-06": 20.90},
]
PAPER_V4_SOURCE = ("the paper (arXiv 2504.20966 v4) Table 2: sink rate over 1000 SlimPajama validation samples, "
                   "the rest over 10 samples, length 4096 and the dead heads of v4 §7.2 (ε = 1e-6, ≥ 95% of 5M tokens; softpick only; "
                   "after 10k steps 17.19% at 340M, 42.87% at 1.8B)")

# The paper's v4 Table 1: zero-shot lm-eval, in %; LAMBADA (openai) perplexity;
# word perplexity on WikiText (ours: the held-out corpus). None = not given.
PAPER_EVAL_V4: list[dict] = [
    {"model": "340M softmax (paper v4 Table 1)", "arc_easy": {"acc": 60.35, "acc_norm": 56.61},
     "lambada": {"acc": 36.25, "perplexity": 30.33}, "piqa": {"acc": 66.97, "acc_norm": 66.59},
     "sciq": {"acc": 83.20, "acc_norm": 74.90}, "word_perplexity": 23.85},
    {"model": "340M softpick (paper v4 Table 1)", "arc_easy": {"acc": 61.11, "acc_norm": 56.73},
     "lambada": {"acc": 36.21, "perplexity": 28.63}, "piqa": {"acc": 66.59, "acc_norm": 66.49},
     "sciq": {"acc": 83.60, "acc_norm": 77.30}, "word_perplexity": 24.32},
    {"model": "1.8B softmax (paper v4 Table 1)", "arc_easy": {"acc": None, "acc_norm": 67.21},
     "lambada": {"acc": 49.43, "perplexity": 11.38}, "piqa": {"acc": None, "acc_norm": 73.61},
     "sciq": {"acc": None, "acc_norm": 86.40}, "word_perplexity": 15.10},
    {"model": "1.8B softpick (paper v4 Table 1)", "arc_easy": {"acc": None, "acc_norm": 62.04},
     "lambada": {"acc": 43.51, "perplexity": 15.81}, "piqa": {"acc": None, "acc_norm": 70.89},
     "sciq": {"acc": None, "acc_norm": 80.40}, "word_perplexity": 17.87},
]
# The columns of the paper's Table 1: (task, metric, header).
TABLE1_COLUMNS: list[tuple[str, str, str]] = [
    ("arc_easy", "acc", "ARC-e acc"), ("arc_easy", "acc_norm", "ARC-e acc_norm"),
    ("lambada", "acc", "LAMBADA acc"), ("lambada", "perplexity", "LAMBADA ppl"),
    ("piqa", "acc", "PIQA acc"), ("piqa", "acc_norm", "PIQA acc_norm"),
    ("sciq", "acc", "SciQ acc"), ("sciq", "acc_norm", "SciQ acc_norm"),
]

PAPER_REFERENCE_SOURCE = ("the authors' analysis scripts' committed outputs (their flame fork) on their released "
                          "340M / 1.8B models: 1000 SlimPajama validation documents, batch 1, fp16")

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
    of the sample's outliers; diamonds: the exact min and max over every analysed value. None when no npz
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
    sums = {v: _load_json(json_paths[v]) for v in data if v in json_paths}
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
            sns.stripplot(data=pd.DataFrame(fl, columns=["hidden state", "value"]), x="hidden state", y="value",
                          order=labels, ax=ax, color=color(v), size=2.2, alpha=0.45, jitter=0.18, zorder=3)
        per = s.get("per_hidden_state") or {}
        if per.get("min") and per.get("max") and len(per["min"]) == len(labels):
            ext = [(lab, _num(per[k][i])) for i, lab in enumerate(labels) for k in ("min", "max")]
            sns.stripplot(data=pd.DataFrame(ext, columns=["hidden state", "value"]), x="hidden state", y="value",
                          order=labels, ax=ax, color="black", marker="D", size=4, jitter=False, zorder=4)
        peak = _num(s.get("max_abs")) if s else float(np.nanmax(np.abs(smp)))
        ax.set_title(f"{_label(v)} (max |h| {peak:.1f})", color=color(v), fontweight="bold")
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
             "; ".join(f"{_label(v)}: {t}" for v, t in zip(data, notes))) if notes else "the analysis sample"
    fig.suptitle("Hidden-state values per layer", fontsize=12)
    cap = ("Boxes: quartiles; whiskers: the most extreme value within 1.5 IQR; dots: up to "
           f"{max_outliers} outliers per hidden state (the most extreme half and an even spread of the rest); "
           f"diamonds: exact min and max over all analysed tokens; grey band: linear part (±{linthresh:g}) of the "
           f"symlog axis. Boxes drawn from {where}.")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_figure(fig, out, cap)


# ------------------------------------------------------------------------------- sink rate
_EPS_STYLE = {"0.3": "-", "0.2": "--"}


# one marker per variant, filled for eps 0.3 / open for 0.2, and a small horizontal dodge per series:
# series that coincide (e.g. every softpick layer at 0 %, at both eps) stay distinguishable
_VARIANT_MARKERS = {"softmax": "o", "softpick": "s"}
_MARKER_CYCLE = ["D", "^", "v", "P", "X"]


def _marker(variant: str) -> str:
    return _VARIANT_MARKERS.get(variant, _MARKER_CYCLE[sum(map(ord, variant)) % len(_MARKER_CYCLE)])


def _dodge(n: int, width: float = 0.36) -> np.ndarray:
    """n evenly spaced x offsets centred on 0, spanning `width` (layers are 1 apart)."""
    return np.zeros(1) if n <= 1 else np.linspace(-width / 2, width / 2, n)


def _plot_per_layer_sink(ax, sources: Mapping[str, dict], title: str) -> None:
    """sources: {variant: a dict with "sink_rate_per_layer" and "sink_rate" (a summary or its sink_rate_short)}."""
    series = [(v, e) for v, src in sources.items() for e in src["sink_rate_per_layer"]]
    for off, (v, e) in zip(_dodge(len(series)), series):
        src = sources[v]
        ys = np.array([_num(y) for y in src["sink_rate_per_layer"][e]])
        ax.plot(np.arange(len(ys)) + off, ys, _EPS_STYLE.get(e, ":"), marker=_marker(v), ms=5, color=color(v), lw=1.6,
                mfc="white" if e == "0.2" else color(v), mew=1.4,
                label=f"{_label(v)}, ε={e} (all layers {_num(src['sink_rate'][e]):.2f}%)")
    ax.set(xlabel="layer", ylabel="sink rate (% of head × doc pairs)", title=title, ylim=(-3, 103))
    ax.legend(fontsize=8, handlelength=3.5)


def plot_sink_rate(json_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Per-layer sink rate at the full length and (when measured) at T = sink_short_len, and per-layer
    sparsity, softmax vs softpick. ε = 0.3 solid / filled markers, 0.2 dashed / open markers; each
    series is dodged sideways so that coinciding series (several at 0 %) stay visible."""
    sums = {v: _load_json(p) for v, p in json_paths.items()}
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
        ax2.plot(x + offsets[2 * k], [_num(y) for y in sp["exact_zero_pct"]], "-", marker=_marker(v), ms=5,
                 color=color(v), lw=1.6, label=f"{_label(v)}, exactly 0 ({_num(s['sparsity']['exact_zero_pct']):.1f}%)")
        ax2.plot(x + offsets[2 * k + 1], [_num(y) for y in sp["le_threshold_pct"]], "--", marker=_marker(v), ms=5,
                 mfc="white", mew=1.2, color=color(v), lw=1.2,
                 label=f"{_label(v)}, |a| ≤ {s['sparsity'].get('threshold', 1e-5):g}")
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
    d = _num(b) - _num(a)
    cell = f"{d:+,.2f}"
    get_se = QUANT_STDERR.get(key)
    if get_se is not None:
        sa, sb = get_se(a_eval), get_se(b_eval)
        if sa is not None and sb is not None and abs(d) < 2 * math.hypot(_num(sa), _num(sb)):
            cell += " (n.s.)"
    return cell


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


def _short_len(sums: Mapping[str, dict]) -> int | None:
    lens = sorted({(x.get("sink_rate_short") or {}).get("length") for x in sums.values()} - {None})
    return lens[0] if len(lens) == 1 else None


def _dead_eps(sums: Mapping[str, dict]) -> list[str]:
    out: list[str] = []
    for x in sums.values():
        for e in ((x.get("dead_heads") or {}).get("pct") or {}):
            if e not in out:
                out.append(e)
    return out or ["1e-06"]


# Reference rows of the analysis table with the length their sink rate was measured at ("full" = the model's
# training length): the paper's v4 Table 2 (L 4096), the authors' committed sweep outputs at L 4096 / 2048 (their
# 100k-step and 10k-step 340M models) and at L 256 (v4 Table 3 equals the 10k-step rows at L 256).
PAPER_ANALYSIS_AT_256: list[dict] = [
    {"model": "340M softmax (paper code, 100k steps)", "variant": "softmax", "sink_0.2": 71.23, "sink_0.3": 67.74,
     "kurtosis": 33722.0},
    {"model": "340M softpick (paper code, 100k steps)", "variant": "softpick", "kurtosis": 344.2, "sparsity_zero": 93.49},
    {"model": "340M softmax (paper v4 Table 3, 10k steps)", "variant": "softmax", "sink_0.2": 47.97, "sink_0.3": 34.89,
     "kurtosis": 6452.72, "min": -270.50, "max": 178.88, "sparsity_zero": 0.16},
    {"model": "340M softpick (paper v4 Table 3, 10k steps)", "variant": "softpick", "sink_0.2": 0.02, "sink_0.3": 0.00,
     "kurtosis": 281.57, "min": -59.06, "max": 25.36, "sparsity_zero": 92.74, "dead_1e-06": 17.19},
]


def _sink_pair(rates: Mapping | None) -> str:
    rates = rates or {}
    if rates.get("0.2") is None and rates.get("0.3") is None:
        return "—"
    return f"{_fmt(rates.get('0.2'), 'pct')} / {_fmt(rates.get('0.3'), 'pct')}"


def _sink_at(summary: dict, length: int) -> dict | None:
    """Sink rates of an analysis summary at one truncation length (T = 64 pass, the sweep, or the full length)."""
    short = summary.get("sink_rate_short") or {}
    if short.get("length") == length:
        return short.get("sink_rate")
    for row in summary.get("length_sweep") or []:
        if row.get("length") == length:
            return row.get("sink_rate")
    return summary.get("sink_rate") if summary.get("max_len") == length else None


def write_analysis_table(json_paths: Mapping[str, str | Path], out, run_label: str = "ours",
                         include_reference: bool = True) -> list[Path]:
    """Analysis table: sink rates (ε 0.2 / 0.3) at T = 64, at L = 256 and at the full length, kurtosis (ours
    and over transformers' hidden states, as the authors pool them), min / max, sparsity and dead heads; below,
    the paper's rows in the column of the length they were measured at."""
    sums = {v: _load_json(p) for v, p in json_paths.items()}
    T = _short_len(sums) or 64
    deps = _dead_eps(sums)
    header = (["model", f"sink % ε 0.2 / 0.3, T={T}", "sink % ε 0.2 / 0.3, L=256", "sink % ε 0.2 / 0.3, full length",
               "kurtosis", "kurtosis (HF states)", "min", "max", "sparsity % (=0)", "sparsity % (≤1e-5)"]
              + [f"dead heads % (ε={e})" for e in deps])
    rows, groups = [], [0]
    for v, s in sums.items():
        sp = s.get("sparsity", {})
        dh = (s.get("dead_heads") or {}).get("pct") or {}
        name = f"{_label(v)} ({run_label}, {s.get('num_docs', '?')} docs, full length {s.get('max_len', '?')})"
        rows.append([name, _sink_pair(_sink_at(s, T)), _sink_pair(_sink_at(s, 256)), _sink_pair(s.get("sink_rate")),
                     _fmt(s.get("kurtosis"), "kurt"), _fmt(s.get("kurtosis_hf_hidden_states"), "kurt"),
                     _fmt(s.get("min")), _fmt(s.get("max")), _fmt(sp.get("exact_zero_pct"), "pct"),
                     _fmt(sp.get("le_threshold_pct"), "pct")]
                    + [_fmt(dh.get(e), "pct") for e in deps])
    notes = ("Sink rate: % of (layer, head, document) triples whose mean attention on the first token exceeds ε; "
             "documents truncated to T / L / the full length, BOS first. Kurtosis μ4/μ2² of every hidden-state value "
             "(embedding, after each layer, final norm); HF states: without the last layer's un-normed output, as "
             "transformers' output_hidden_states and the authors' scripts pool them.")
    if include_reference:
        refs = ([(r, "full", " *") for r in PAPER_ANALYSIS_V4] + [(r, "full", " †") for r in PAPER_ANALYSIS_REFERENCE]
                + [(r, "full", " †") for r in PAPER_ANALYSIS_REFERENCE_10K] + [(r, 256, " ‡") for r in PAPER_ANALYSIS_AT_256])
        groups.append(len(rows))
        for r, at, mark in refs:
            pair = _sink_pair({"0.2": r.get("sink_0.2"), "0.3": r.get("sink_0.3")})
            rows.append([r["model"] + mark, "—", pair if at == 256 else "—", pair if at == "full" else "—",
                         _fmt(r.get("kurtosis"), "kurt"), "—", _fmt(r.get("min")), _fmt(r.get("max")),
                         _fmt(r.get("sparsity_zero"), "pct"), _fmt(r.get("sparsity_le"), "pct")]
                        + [_fmt(r.get(f"dead_{e}"), "pct") for e in deps])
        notes += (" Reference rows, a different scale (340M / 1.8B parameters, 10k-200k steps x 524k tokens): "
                  "* " + PAPER_V4_SOURCE + "; † " + PAPER_REFERENCE_SOURCE + ", documents truncated to 4096 tokens "
                  "(1.8B: 2048); ‡ the same scripts' length sweep at L = 256 (v4 Table 3 equals its 10k-step rows), "
                  "their kurtosis and sparsity at L = 256 too. Their kurtosis pools transformers' hidden states. "
                  "— = not reported. Our dead heads: max |head output| < ε on ≥ 95% of the analysed tokens.")
    return _tables(header, rows, "Attention sink, massive activations, sparsity and dead heads", "tab:analysis", out,
                   groups, notes)


def _pct_se(d: dict, metric: str) -> str:
    a, se = d.get(metric), d.get(f"{metric}_stderr")
    if a is None or not math.isfinite(_num(a)):
        return "—"
    return f"{100 * _num(a):.1f}" + (f" ± {100 * _num(se):.1f}" if se is not None and math.isfinite(_num(se)) else "")


def write_eval_table(eval_paths: Mapping[str, str | Path], out, run_label: str = "ours",
                     include_reference: bool = True) -> list[Path]:
    """The paper's Table 1 layout: acc and acc_norm (ARC-e, PIQA, SciQ), LAMBADA acc + perplexity and word
    perplexity, our models (± standard error) above the paper's v4 340M / 1.8B numbers (another scale)."""
    evs = {v: _load_json(p) for v, p in eval_paths.items()}
    header = ["model"] + [h for _, _, h in TABLE1_COLUMNS] + ["word ppl"]
    rows, groups = [], [0]
    for v, e in evs.items():
        tasks = e.get("tasks", {})
        r = [f"{_label(v)} ({run_label})"]
        for task, metric, _ in TABLE1_COLUMNS:
            d = tasks.get(task) or {}
            r.append(_fmt(d.get(metric), "ppl") if metric == "perplexity" else _pct_se(d, metric))
        r.append(_fmt((e.get("perplexity") or {}).get("word_perplexity"), "ppl"))
        rows.append(r)
    notes = ("Accuracy in % (± bootstrap standard error); perplexity lower is better. Ours: word ppl on the held-out "
             "corpus documents.")
    limits = sorted({"all" if e["limit"] is None else str(e["limit"]) for e in evs.values() if "limit" in e})
    if limits:
        notes += " Our examples per task: " + ", ".join(limits) + "."
    if include_reference:
        groups.append(len(rows))
        for ref in PAPER_EVAL_V4:
            r = [ref["model"] + " *"]
            for task, metric, _ in TABLE1_COLUMNS:
                x = (ref.get(task) or {}).get(metric)
                r.append(_fmt(x, "ppl") if metric == "perplexity" else _fmt(x))
            r.append(_fmt(ref["word_perplexity"], "ppl"))
            rows.append(r)
        notes += (" * The paper (arXiv 2504.20966 v4 Table 1): 340M / 1.8B models, a different scale; word ppl on WikiText; "
                  "— = not reported.")
    return _tables(header, rows, "Zero-shot evaluation as the paper's Table 1 (%, perplexity)", "tab:eval", out, groups,
                   notes)


def write_eval_table_all(eval_paths: Mapping[str, str | Path], out) -> list[Path]:
    """Every evaluated task: acc and acc_norm (± stderr where given), the mean acc, and every perplexity."""
    evs = {v: _load_json(p) for v, p in eval_paths.items()}
    tasks = sorted({t for e in evs.values() for t in e.get("tasks", {})})
    metrics = [(t, m) for t in tasks for m in ("acc", "acc_norm", "perplexity")
               if any(m in ((e.get("tasks") or {}).get(t) or {}) for e in evs.values())]
    pkeys = [k for k in ("word_perplexity", "byte_perplexity", "bits_per_byte")
             if any(k in (e.get("perplexity") or {}) for e in evs.values())]
    header = (["model"] + [f"{t} {'ppl' if m == 'perplexity' else m}" for t, m in metrics] + ["mean acc"]
              + [k.replace("_", " ") for k in pkeys])
    rows = []
    for v, e in evs.items():
        r = [_label(v)]
        for t, m in metrics:
            d = (e.get("tasks") or {}).get(t) or {}
            r.append(_fmt(d.get(m), "ppl") if m == "perplexity" else _pct_se(d, m))
        r.append(_fmt(100 * _mean_acc(e, "acc")))
        r += [_fmt((e.get("perplexity") or {}).get(k), "ppl") for k in pkeys]
        rows.append(r)
    return _tables(header, rows, "Zero-shot evaluation, every task (%) and perplexity", "tab:eval_all", out,
                   notes="Accuracy in % (± standard error); perplexity lower is better; mean acc over the tasks.")


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
        for key, _, get, log, _ in metrics:
            vals = {v: (get(evs[v]) if v in evs else None) for v in variants}
            kind = "ppl" if log else "num"
            for v in variants:
                se = QUANT_STDERR[key](evs[v]) if key in QUANT_STDERR and v in evs else None
                r.append(_fmt(vals[v], kind) + (f" ± {_fmt(se, kind)}" if se is not None and vals[v] is not None else ""))
            if delta:
                r.append(_delta_cell(key, evs.get("softmax", {}), evs.get("softpick", {}), vals["softmax"], vals["softpick"]))
        rows.append(r)
    notes = ("Δ = softpick − softmax (accuracy: positive favours softpick; perplexity: negative favours softpick); "
             "(n.s.): smaller than two standard errors of the difference, not a difference. "
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
        written += plot_hidden_box(ajs, anz, fig_dir / "hidden_state_boxplots") or []
    if ajs:
        written += plot_sink_rate(ajs, fig_dir / "sink_rate_per_layer")
        written += plot_length_sweep(ajs, fig_dir / "length_sweep") or []
        written += write_analysis_table(ajs, table_dir / "analysis_table", run_label)
    if evs:
        written += write_eval_table(evs, table_dir / "eval_table", run_label)
        written += write_eval_table_all(evs, table_dir / "eval_table_all_tasks")
    if quant:
        written += plot_quantization(evs, quant, fig_dir / "quantization")
        written += write_quant_table(evs, quant, table_dir / "quant_table")
    from .figures import REGISTRY

    for name, fig in REGISTRY.items():  # the figure families moved to softpick.figures
        inputs = {key: found(key) for key in fig.READS if key in lay}
        if len(inputs) == len(fig.READS) and all(inputs.values()):
            written += fig.draw(inputs, (fig_dir if fig.KIND == "figure" else table_dir) / name)
    return written


# ------------------------------------------------------------------- sink-free variants (Table 3)
# The paper's v4 Table 3: 340M shape, 10k steps; sink % at L = 256 (eps 0.2 / 0.3; the authors' sweep),
# kurtosis, min, max, sparsity % (exact zeros). Dead heads (v4 7.2, eps 1e-6): softpick 17.19% after
# 10k steps. Passkey (v4 Table 4, % at 890/1983/3075/4167/4986 tokens, 4096-token training context):
# softmax and softpick only. Not reported: sink at T = 64, validation loss (None).
PAPER_VARIANTS_REFERENCE: list[dict] = [
    {"variant": "softmax", "sink_0.2": 47.97, "sink_0.3": 34.89, "kurtosis": 6452.72, "min": -270.50, "max": 178.88,
     "sparsity_zero": 0.16, "passkey": [95.5, 97.0, 73.0, 70.5, 0.0]},
    {"variant": "softpick", "sink_0.2": 0.02, "sink_0.3": 0.00, "kurtosis": 281.57, "min": -59.06, "max": 25.36,
     "sparsity_zero": 92.74, "dead_heads": 17.19, "passkey": [94.0, 91.0, 75.0, 66.5, 0.0]},
    {"variant": "gated", "sink_0.2": 5.00, "sink_0.3": 2.00, "kurtosis": 135.62, "min": -49.09, "max": 23.31,
     "sparsity_zero": 0.73},
    {"variant": "learned_sink", "sink_0.2": 19.34, "sink_0.3": 8.78, "kurtosis": 1800.34, "min": -36.25, "max": 106.62,
     "sparsity_zero": 0.05},
    {"variant": "rectified_softmax", "sink_0.2": 33.08, "sink_0.3": 25.60, "kurtosis": 11054.50, "min": -312.25,
     "max": 271.00, "sparsity_zero": 60.70},
    {"variant": "relu_softmax", "sink_0.2": 8.16, "sink_0.3": 4.56, "kurtosis": 452.59, "min": -61.28, "max": 60.62,
     "sparsity_zero": 29.08},
    {"variant": "scaled_softpick", "sink_0.2": 0.01, "sink_0.3": 0.00, "kurtosis": 170.70, "min": -53.69, "max": 30.81,
     "sparsity_zero": 91.95},
    {"variant": "softmax_plus_one", "sink_0.2": 24.38, "sink_0.3": 16.36, "kurtosis": 574.16, "min": -47.56,
     "max": 83.88, "sparsity_zero": 0.12},
]
PAPER_PASSKEY_LENGTHS = [890, 1983, 3075, 4167, 4986]


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
        s = _load_json(p)
        val = _load_json(train_summary_paths[v]).get("final_val_loss") if v in train_summary_paths else None
        passkey = "—"
        if v in passkey_paths:
            pk = _load_json(passkey_paths[v])
            acc = pk.get("accuracy_by_length", {})
            our_lengths.add(tuple(acc))
            passkey = " / ".join(f"{_num(a):.1f}" for a in acc.values()) or "—"
        rows.append([f"{_label(v)} ({run_label})", _sink_pair(_sink_at(s, 64)), _sink_pair(_sink_at(s, 256)),
                     _sink_pair(s.get("sink_rate")), _fmt(s.get("kurtosis"), "kurt"),
                     _fmt(s.get("min")), _fmt(s.get("max")), _fmt(s.get("sparsity", {}).get("exact_zero_pct"), "pct"),
                     _fmt(_dead_heads_pct(s), "pct"), _fmt(val), passkey])
    notes = []
    if our_lengths:
        notes.append("Passkey: greedy exact-match accuracy at " + "; ".join("/".join(ls) for ls in sorted(our_lengths))
                     + " prompt tokens (ours).")
    if include_reference:
        groups.append(len(rows))
        for r in PAPER_VARIANTS_REFERENCE:
            pk = r.get("passkey")
            rows.append([f"{_label(r['variant'])} (paper v4, 340M, 10k steps) †", "—",
                         _sink_pair({"0.2": r["sink_0.2"], "0.3": r["sink_0.3"]}), "—", _fmt(r["kurtosis"], "kurt"),
                         _fmt(r["min"]), _fmt(r["max"]), _fmt(r["sparsity_zero"], "pct"), _fmt(r.get("dead_heads"), "pct"),
                         "—", " / ".join(f"{a:g}" for a in pk) if pk else "—"])
        notes.append("† The paper's v4 Table 3 (arXiv 2504.20966): 340M parameters, 10k steps, a different scale from "
                     "ours; its numbers are the authors' length sweep at L = 256 (sink rate, kurtosis, min / max and "
                     "sparsity all at 256); its passkey numbers (Table 4) at " + "/".join(map(str, PAPER_PASSKEY_LENGTHS))
                     + " tokens of a 4096-token context, dead heads from §7.2. — = not reported.")
    return _tables(header, rows, "Sink-free attention variants (the paper's Table 3)", "tab:variants", out, groups,
                   " ".join(notes))
