"""knockout: validation loss with the first token's weight zeroed in the sink heads vs random heads
(softpick.knockout)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..knockout import run_knockout

    require(job.model_dir / "config.json", "train")
    out = job.results / "knockout" / f"{job.variant}.json"
    run_knockout(job.model_dir, job.data_dir, job.config, out, device=job.device)
    return [out]


def inputs(job: Job):
    return [*model_inputs(job), job.data_dir / "tokens_val.npy"]


STAGE = Stage("knockout", "validation loss with the first token's weight zeroed in the sink heads vs random heads",
              run, sections=("device", "analysis", "knockout", "train"), inputs=inputs, variant=True, device=True,
              splits=("val",))
