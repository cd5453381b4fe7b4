"""quantize: weight-only quantization of one model with one method at one bit width, then the evaluation
(softpick.quantize)."""
from __future__ import annotations

from .base import Job, Stage, model_inputs, require


def run(job: Job):
    from ..quantize import quantize_and_evaluate

    require(job.model_dir / "config.json", "train")
    out = job.paths["quant"] / job.variant / f"{job.method}_{job.bits}bit.json"
    quant_cfg = {**job.config["quantize"], "methods": [job.method], "bits": [job.bits]}  # this job of the grid
    quantize_and_evaluate(job.model_dir, quant_cfg, job.config["eval"], job.data_dir / "val_docs.jsonl", out,
                          device=job.device, bits=job.bits, method=job.method, data_dir=job.data_dir)
    return [out]


def inputs(job: Job):
    return [*model_inputs(job), job.data_dir / "val_docs.jsonl"]


STAGE = Stage("quantize", "weight-only quantization of one model at one bit width, then the same evaluation", run,
              sections=("device", "quantize", "eval"), inputs=inputs, variant=True, quantized=True, device=True,
              splits=())
