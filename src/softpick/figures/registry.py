"""The registry of figures and tables: every module of this package that defines FIGURES (a tuple of
base.Figure) is a figure family, found here by name; nothing else lists them.

Adding a figure (or table) = one new module here and its caption:

  1. softpick/figures/<family>.py with a draw function and
         FIGURES = (Figure("<name>", "figure", "<name>.rst", "<report category>", ("<layout key>", ...), draw),)
     draw(inputs, out, run_label) gets {layout key: {variant: path}} for the keys it reads (results.LAYOUT says
     where each lies under results/<run>/ and which stage writes it), writes <out>.png + <out>.pdf with
     style.save_figure (a table: <out>.md + <out>.tex with tables.write_tables) and returns the written paths;
  2. workflow/report/<name>.rst: its caption in Snakemake's report.

`softpick figures` (rule figures) then draws it and the Snakefile lists its outputs and inputs
(common.smk figure_outputs / figure_inputs). A figure with rule="<rule>" is drawn by that Snakemake rule
instead (mechanism_figure after the mechanism stage, variants_table after passkey).
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Sequence

from .base import Figure
from .results import find

# the modules _discover imports by name (softpick.stages.code follows them as imports)
PACKAGE_FILES = ("figures/*.py",)


def _discover() -> dict[str, Figure]:
    package = __name__.rsplit(".", 1)[0]
    registry: dict[str, Figure] = {}
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        module = importlib.import_module(f"{package}.{info.name}")
        for fig in getattr(module, "FIGURES", ()):
            if fig.name in registry:
                raise ValueError(f"figure name {fig.name!r} is registered twice (softpick.figures.{info.name} and another family)")
            registry[fig.name] = fig
    return registry


REGISTRY: dict[str, Figure] = _discover()


def figures_of(rule: str | None = "figures") -> list[Figure]:
    """The registered figures a Snakemake rule draws (every one for rule=None)."""
    return [fig for fig in REGISTRY.values() if rule is None or fig.rule == rule]


def find_inputs(fig: Figure, run_dir, variants: Sequence[str], strict: bool = False) -> dict | None:
    """{layout key: {variant: path}} of what `fig` reads; None when a needed key has no file for any variant.
    strict: any missing needed file raises FileNotFoundError naming it and the stage that writes it."""
    inputs = {key: find(run_dir, key, variants, strict) for key in fig.reads}
    if not all(inputs.values()):
        return None
    inputs.update({key: find(run_dir, key, variants) for key in fig.optional})
    return inputs


def make_all(run_dir, fig_dir, variants: Sequence[str] = ("softmax", "softpick"), table_dir=None,
             run_label: str | None = None, strict: bool = False, rule: str | None = "figures") -> list[Path]:
    """Draw the figures of `rule` (every rule: None) from the results under run_dir (results/<run>/, laid out as
    results.LAYOUT says); figures go to fig_dir, tables to table_dir (default fig_dir). Returns the written paths.
    A figure whose inputs are missing for every variant is skipped; strict: every input of every figure must
    exist, else FileNotFoundError naming the file and the stage that writes it (checked before drawing any)."""
    run_dir, fig_dir = Path(run_dir), Path(fig_dir)
    table_dir = Path(table_dir) if table_dir else fig_dir
    run_label = run_label or run_dir.name
    todo = [(fig, find_inputs(fig, run_dir, variants, strict)) for fig in figures_of(rule)]
    written: list[Path] = []
    for fig, inputs in todo:
        if inputs is not None:
            out = (fig_dir if fig.kind == "figure" else table_dir) / fig.name
            written += fig.draw(inputs, out, run_label) or []
    return written
