"""variants_table: the paper's Table 3 at this run's scale (softpick.figures.variants_table)."""
from __future__ import annotations

from .base import Job, Stage
from .figures import draw, result_files


def run(job: Job):
    return draw(job, "variants_table")


STAGE = Stage("variants_table", "the paper's Table 3 at this run's scale: sink rates, kurtosis, min / max, sparsity, "
              "dead heads, validation loss, passkey", run, sections=("run_name", "variants"),
              inputs=lambda job: result_files(job, "variants_table"))
