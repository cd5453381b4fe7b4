"""mechanism: Bigram-Backcopy, a 1-layer model on the synthetic task, and how its attention sink forms
(softpick.mechanism)."""
from __future__ import annotations

from .base import Job, Stage, require


def run(job: Job):
    from ..mechanism import run_mechanism

    require(job.data_dir / "manifest.json", "data")
    out = job.results / "mechanism" / f"{job.variant}.json"
    run_mechanism(job.config, job.variant, job.data_dir, out)
    return [out]


def inputs(job: Job):
    return [job.data_dir / name for name in ("manifest.json", "tokens_train.npy", "docs_train.npy")]


STAGE = Stage("mechanism", "Bigram-Backcopy: train a 1-layer model on the synthetic task, measure how its attention "
              "sink forms", run, sections=("seed", "mechanism"), inputs=inputs, variant=True)
