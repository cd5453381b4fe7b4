"""dynamics: the analysis metrics and validation loss at every weight snapshot of one training (softpick.dynamics)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..dynamics import run_dynamics

    require(job.model_dir / "snapshots.json", "train")
    out = job.results / "dynamics" / f"{job.variant}.json"
    run_dynamics(job.model_dir, job.data_dir, job.config, out, device=job.device)
    return [out]


def inputs(job: Job):
    return [*model_inputs(job), job.model_dir / "snapshots.json", job.data_dir / "tokens_val.npy",
            job.data_dir / "docs_val.npy"]


STAGE = Stage("dynamics", "the analysis metrics and validation loss at every weight snapshot of one training", run,
              sections=("device", "analysis", "dynamics", "train"), inputs=inputs, variant=True, device=True,
              splits=("val",))
