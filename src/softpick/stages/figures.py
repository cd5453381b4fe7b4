"""figures: every figure and table of the run (softpick.figures, the figures of rule `figures`)."""
from __future__ import annotations

from .base import Job, Stage


def draw(job: Job, rule: str):
    """The registry's figures of `rule` from the run's results (strict: a missing input names its stage)."""
    from ..figures import make_all

    return make_all(job.results, job.paths["figures"], job.config["variants"], table_dir=job.paths["tables"],
                    run_label=job.config["run_name"], strict=True, rule=rule)


def result_files(job: Job, rule: str):
    """The result files the figures of `rule` read that exist (the log header's inputs)."""
    from ..figures import figures_of
    from ..figures.results import find

    keys = dict.fromkeys(k for fig in figures_of(rule) for k in (*fig.reads, *fig.optional))
    found = [p for key in keys for v, ps in find(job.results, key, job.config["variants"]).items()
             for p in (ps if isinstance(ps, list) else [ps])]
    return sorted(map(str, found))


def run(job: Job):
    return draw(job, "figures")


STAGE = Stage("figures", "every figure and table of the run", run, sections=("run_name", "variants", "quantize"),
              inputs=lambda job: result_files(job, "figures"))
