"""data: corpus -> tokenizer -> token files + manifest (softpick.data; SlimPajama's validation split: softpick.slimpajama)."""
from __future__ import annotations

from .base import Job, Stage, manifest_files


def run(job: Job):
    from ..data import prepare_data
    from ..slimpajama import SOURCE, prepare_slimpajama_val

    prepare = prepare_slimpajama_val if job.config["data"].get("source") == SOURCE else prepare_data
    prepare(job.config["data"], job.data_dir, seed=job.config["seed"])
    return manifest_files(job.data_dir)


STAGE = Stage("data", "corpus -> tokenizer -> token files + manifest (results/<run>/data/)", run,
              sections=("seed", "data"))
