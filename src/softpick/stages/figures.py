"""figures: every figure and table of the run (softpick.plots.make_all)."""
from __future__ import annotations

from .base import Job, Stage

# Where the figures find each result under results/<run>/ (the rules write them there).
RESULT_LAYOUT = {
    "train_log": "models/{variant}/train_log.jsonl",
    "analysis_json": "analysis/{variant}.json",
    "analysis_npz": "analysis/{variant}.npz",
    "eval": "eval/{variant}.json",
    "quant_glob": "quant/{variant}/*bit.json",
    "dynamics": "dynamics/{variant}.json",
    "knockout": "knockout/{variant}.json",
}


def run(job: Job):
    from ..plots import make_all

    return make_all(job.results, job.paths["figures"], job.config["variants"], layout=RESULT_LAYOUT,
                    table_dir=job.paths["tables"], run_label=job.config["run_name"], strict=True)


def inputs(job: Job):
    return sorted(p for sub in ("eval", "quant", "analysis", "dynamics", "knockout")
                  for p in (job.results / sub).rglob("*.json"))


STAGE = Stage("figures", "every figure and table of the run", run, sections=("run_name", "variants", "quantize"),
              inputs=inputs)
