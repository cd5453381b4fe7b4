"""train: pretrain one attention variant and export it (softpick.train)."""
from __future__ import annotations

from .base import Job, Stage, manifest_files


def run(job: Job):
    from ..train import train

    train(job.config, job.variant, job.data_dir, job.model_dir)
    return manifest_files(job.model_dir)


def inputs(job: Job):
    return [job.data_dir / name for name in ("manifest.json", "tokens_train.npy", "tokens_val.npy")]


STAGE = Stage("train", "pretrain one attention variant (results/<run>/models/<variant>/)", run,
              sections=("seed", "device", "data", "model", "train"), inputs=inputs, variant=True, device=True,
              splits=("train", "val"))
