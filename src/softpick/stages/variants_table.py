"""variants_table: the paper's Table 3 at this run's scale (softpick.plots.write_variants_table)."""
from __future__ import annotations

from .base import Job, Stage, require


def _files(job: Job) -> dict[str, dict[str, object]]:
    return {v: {"analysis": require(job.paths["analysis"] / f"{v}.json", f"analyze --variant {v}"),
                "passkey": require(job.results / "passkey" / f"{v}.json", f"passkey --variant {v}"),
                "summary": require(job.paths["models"] / v / "train_summary.json", f"train --variant {v}")}
            for v in job.config["variants"]}


def run(job: Job):
    from ..plots import write_variants_table

    files = _files(job)
    return write_variants_table({v: f["analysis"] for v, f in files.items()}, job.paths["tables"] / "variants_table.md",
                                passkey_paths={v: f["passkey"] for v, f in files.items()},
                                train_summary_paths={v: f["summary"] for v, f in files.items()},
                                run_label=job.config["run_name"])


def inputs(job: Job):
    return [p for v in job.config["variants"] for p in (job.paths["analysis"] / f"{v}.json",
            job.results / "passkey" / f"{v}.json", job.paths["models"] / v / "train_summary.json")]


STAGE = Stage("variants_table", "the paper's Table 3 at this run's scale: sink rates, kurtosis, min / max, sparsity, "
              "dead heads, validation loss, passkey", run, sections=("run_name", "variants"), inputs=inputs)
