"""What a figure (or table) of the registry is: a name, the result files it reads, the files it writes,
its caption for Snakemake's report and the function that draws it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from .results import LAYOUT

EXTENSIONS = {"figure": ("png", "pdf"), "table": ("md", "tex")}

# draw(inputs, out, run_label) -> the written paths (None: nothing to draw from these inputs, e.g. an
# analysis from before the metric existed). inputs: {layout key: {variant: path (a list for a glob key)}};
# out: the output stem (<dir>/<name>); run_label names our rows in tables.
DrawFn = Callable[..., Optional[list[Path]]]


@dataclass(frozen=True)
class Figure:
    name: str  # output stem: figures/<run>/<name>.png/.pdf or results/<run>/tables/<name>.md/.tex
    kind: str  # "figure" or "table"
    caption: str  # its caption file in workflow/report/ (Snakemake's report reads it there)
    category: str  # the report's section
    reads: tuple[str, ...]  # results.LAYOUT keys it needs, per variant
    draw: DrawFn
    optional: tuple[str, ...] = ()  # LAYOUT keys it reads where present
    rule: str = "figures"  # the Snakemake rule (and `softpick` stage) that draws it
    per_variant: bool = False  # one output per variant: <name>_<variant>.*

    def __post_init__(self):
        if self.kind not in EXTENSIONS:
            raise ValueError(f"figure {self.name!r}: kind must be one of {sorted(EXTENSIONS)}, got {self.kind!r}")
        unknown = [k for k in (*self.reads, *self.optional) if k not in LAYOUT]
        if unknown:
            raise ValueError(f"figure {self.name!r} reads {unknown}, not keys of softpick.figures.results.LAYOUT")
        if not self.caption.endswith(".rst"):
            raise ValueError(f"figure {self.name!r}: caption must name a workflow/report/*.rst file, got {self.caption!r}")

    @property
    def extensions(self) -> tuple[str, ...]:
        return EXTENSIONS[self.kind]

    def stems(self, variants: Sequence[str]) -> list[str]:
        return [f"{self.name}_{v}" for v in variants] if self.per_variant else [self.name]

    def outputs(self, variants: Sequence[str]) -> list[str]:
        """The file names it writes (in the figure or the table directory), the report's file first per stem."""
        return [f"{stem}.{ext}" for stem in self.stems(variants) for ext in self.extensions]
