"""mechanism_figure: the mechanism results of every variant side by side (softpick.mechanism.plot_mechanism)."""
from __future__ import annotations

from .base import Job, Stage, require


def run(job: Job):
    from ..mechanism import plot_mechanism

    jsons = {v: require(job.results / "mechanism" / f"{v}.json", f"mechanism --variant {v}")
             for v in job.config["variants"]}
    return plot_mechanism(jsons, job.paths["figures"] / "mechanism")


def inputs(job: Job):
    return sorted((job.results / "mechanism").glob("*.json"))


STAGE = Stage("mechanism_figure", "the mechanism figure of every variant", run, sections=("variants",), inputs=inputs)
