"""Figures and tables as a registry: one module per figure family, each declaring

    NAME      the output stem under figures/<run>/ (figures) or results/<run>/tables/ (tables)
    KIND      "figure" (PNG + PDF) or "table" (Markdown + LaTeX)
    CAPTION   one sentence, for Snakemake's report
    READS     the result layout keys it reads (softpick.cli.RESULT_LAYOUT), per variant
    draw(inputs, out)  inputs: {layout key: {variant: path}} -> the written paths

The older figures still live in softpick.plots (moved here one family at a time)."""
from __future__ import annotations

from types import ModuleType

from . import authors_reference, claims_over_training, knockout_table

REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (claims_over_training, knockout_table, authors_reference)}

__all__ = ["REGISTRY"]
