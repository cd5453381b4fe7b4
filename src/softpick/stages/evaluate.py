"""evaluate: lm-eval zero-shot tasks + held-out perplexity of one model (softpick.evaluate)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..evaluate import evaluate_dir

    require(job.model_dir / "config.json", "train")
    out = job.paths["eval"] / f"{job.variant}.json"
    evaluate_dir(job.model_dir, job.config["eval"], job.data_dir / "val_docs.jsonl", out, device=job.device)
    return [out]


def inputs(job: Job):
    return [*model_inputs(job), job.data_dir / "val_docs.jsonl"]


STAGE = Stage("evaluate", "lm-eval zero-shot tasks + held-out perplexity of one model", run,
              sections=("device", "eval"), inputs=inputs, variant=True, device=True, splits=())
