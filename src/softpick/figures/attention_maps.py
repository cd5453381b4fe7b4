"""Attention maps of the analysis's example document, per variant (results/<run>/analysis/<variant>.npz,
"attn_example": [layers, heads, T, T], softpick.analysis)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colors as mcolors

from .base import Figure
from .style import color, label_of, pick_indices, plt, save_figure


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
    layers, heads = pick_indices(L, max_layers), pick_indices(H, max_heads)
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
    fig.suptitle(f"Attention maps, {label_of(variant)} (first {t} tokens of the example document)",
                 color=color(variant), fontsize=12, fontweight="bold")
    fig.tight_layout(rect=(0, 0.06, 0.9, 0.97))
    cax = fig.add_axes([0.92, 0.2, 0.015, 0.6])
    cb = fig.colorbar(im, cax=cax, extend="min")
    cb.set_label("attention weight (log scale)")
    cap = (f"Rows = queries, columns = keys (key 0 = BOS). White = exactly 0 "
           f"({100 * n_zero / max(n_tri, 1):.1f}% of the causal entries shown); grey = masked (future) positions; "
           f"weights < {vmin:g} are clipped to the darkest colour.")
    return save_figure(fig, out, cap)


def _draw(inputs, out, run_label="ours"):
    stem = Path(out)
    written = []
    for v, p in inputs["analysis_npz"].items():
        written += plot_attention_maps(p, stem.with_name(f"{stem.name}_{v}"), v)
    return written


FIGURES = (Figure("attention_maps", "figure", "attention_maps.rst", "Analysis", ("analysis_npz",), _draw,
                  per_variant=True),)
