"""Every figure and table of the reproduction, as a registry: one module per figure family.

    base.py           Figure: name, kind, caption file, report category, the result files it reads, draw()
    registry.py       REGISTRY (found by module: how to add a figure is written there) and make_all
    results.py        the results layout under results/<run>/ and the stage that writes each file
    style.py          colours, labels (the attention kinds'), matplotlib settings, PNG + PDF saving
    tables.py         number formats and the Markdown + LaTeX table writer
    paper_numbers.py  the paper's (and the authors' scripts') reference numbers, with their source tables

REGISTRY and make_all are loaded on first use, so that softpick.figures.results is importable without
matplotlib.
"""
from __future__ import annotations

__all__ = ["REGISTRY", "Figure", "figures_of", "make_all"]


def __getattr__(name: str):
    if name in __all__:
        from . import registry
        from .base import Figure

        return Figure if name == "Figure" else getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
