"""mechanism_figure: the mechanism results of every variant side by side (softpick.figures.mechanism)."""
from __future__ import annotations

from .base import Job, Stage
from .figures import draw, result_files


def run(job: Job):
    return draw(job, "mechanism_figure")


STAGE = Stage("mechanism_figure", "the mechanism figure of every variant", run, sections=("variants",),
              inputs=lambda job: result_files(job, "mechanism_figure"))
