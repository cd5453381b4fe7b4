"""The look shared by every figure: matplotlib's Agg backend and rc settings, each attention variant's
colour and display name (attributes of its attention kind, softpick.attention.kinds: softmax vermillion,
softpick blue, everywhere), markers, and saving as PNG (dpi 150) + PDF, each file written atomically
(a temporary file in the target directory, then os.replace). Distributions are drawn with seaborn."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..atomic import atomic_path  # noqa: E402

__all__ = ["plt", "color", "label_of", "marker", "num", "pick_indices", "save_figure", "stem_of", "write_text"]

# Okabe-Ito colours for a variant that is no attention kind (named by its characters, so it keeps its colour)
_FALLBACK = ["#009E73", "#F0E442", "#CC79A7", "#56B4E9", "#E69F00", "#000000"]
# one marker per variant where series of several variants overlap
_VARIANT_MARKERS = {"softmax": "o", "softpick": "s"}
_MARKER_CYCLE = ["D", "^", "v", "P", "X"]

plt.rcParams.update({
    "figure.dpi": 100, "savefig.dpi": 150, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
    "legend.fontsize": 9, "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.25, "grid.linewidth": 0.6, "legend.frameon": False,
})


def _kind(variant: str):
    from ..attention.kinds import REGISTRY

    return REGISTRY.get(variant)


def color(variant: str) -> str:
    kind = _kind(variant)
    if kind is not None and kind.color:
        return kind.color
    return _FALLBACK[sum(map(ord, variant)) % len(_FALLBACK)]


def label_of(variant: str) -> str:
    """The display name: the attention kind's label, else the name with spaces."""
    kind = _kind(variant)
    return kind.label if kind is not None and kind.label else variant.replace("_", " ")


def marker(variant: str) -> str:
    return _VARIANT_MARKERS.get(variant, _MARKER_CYCLE[sum(map(ord, variant)) % len(_MARKER_CYCLE)])


def num(x) -> float:
    """float(x), NaN for None or anything that is no number."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def pick_indices(n: int, k: int) -> list[int]:
    """At most k evenly spread indices of range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted(set(int(round(i)) for i in np.linspace(0, n - 1, k)))


def stem_of(out) -> Path:
    """An output path without its .png / .pdf / .md / .tex suffix."""
    out = Path(out)
    return out.with_suffix("") if out.suffix.lower() in {".png", ".pdf", ".md", ".tex"} else out


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def save_figure(fig, out, caption: str | None = None) -> list[Path]:
    """Save `fig` as <out>.png (dpi 150) and <out>.pdf atomically; close it. Returns both paths."""
    if caption:
        fig.text(0.01, -0.005, caption, ha="left", va="top", fontsize=8, color="#444444", style="italic", wrap=True)
    stem = stem_of(out)
    paths = []
    for ext in ("png", "pdf"):
        p = stem.with_name(stem.name + "." + ext)
        with atomic_path(p) as tmp:
            fig.savefig(tmp, format=ext, dpi=150, bbox_inches="tight")
        paths.append(p)
    plt.close(fig)
    return paths
