"""analyze: sink rate, kurtosis, activations and attention sparsity of one model (softpick.analysis)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..analysis import run_analysis

    require(job.model_dir / "config.json", "train")
    out_json, out_npz = (job.paths["analysis"] / f"{job.variant}.{ext}" for ext in ("json", "npz"))
    run_analysis(job.model_dir, job.data_dir, job.config["analysis"], out_json, out_npz, device=job.device)
    return [out_json, out_npz]


def inputs(job: Job):
    return [*model_inputs(job), job.data_dir / "tokens_val.npy", job.data_dir / "docs_val.npy"]


STAGE = Stage("analyze", "sink rate, kurtosis, activations and attention sparsity of one model", run,
              sections=("device", "analysis"), inputs=inputs, variant=True, device=True, splits=("val",))
