"""data: corpus -> tokenizer -> token files + manifest (softpick.data; every data.source)."""
from __future__ import annotations

from .base import Job, Stage, manifest_files


def run(job: Job):
    from ..data import prepare_data

    prepare_data(job.config["data"], job.data_dir, seed=job.config["seed"])
    return manifest_files(job.data_dir)


STAGE = Stage("data", "corpus -> tokenizer -> token files + manifest (results/<run>/data/)", run,
              sections=("seed", "data"))
