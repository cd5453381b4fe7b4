"""passkey: passkey retrieval accuracy of one model at several prompt lengths (softpick.passkey)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..passkey import run_passkey

    require(job.model_dir / "config.json", "train")
    require(job.data_dir / "tokenizer" / "tokenizer.json", "data")
    out = job.results / "passkey" / f"{job.variant}.json"
    run_passkey(job.model_dir, job.data_dir, job.config.get("passkey", {}), out, variant=job.variant,
                seed=job.config["seed"], train_seq_len=job.config["train"]["seq_len"], device=job.device)
    return [out]


def inputs(job: Job):
    return [*model_inputs(job), job.data_dir / "tokenizer" / "tokenizer.json"]


STAGE = Stage("passkey", "passkey retrieval accuracy of one model at several prompt lengths", run,
              sections=("device", "passkey"), inputs=inputs, variant=True, device=True, splits=())
