"""The one description of a run's results layout: where each result file lies under results/<run>/ and
which pipeline stage (Snakemake rule, `softpick <stage>`) writes it. The figures find their inputs here;
the Snakefile's figure rules list them from here too (common.smk figure_inputs)."""
from __future__ import annotations

import glob
import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ResultFile:
    pattern: str  # relative to results/<run>/; {variant} substituted, a {method} / {bits} field makes it a glob
    stage: str  # the stage that writes it

    @property
    def is_glob(self) -> bool:
        return "{method}" in self.pattern

    def path(self, run_dir, variant: str, **fields) -> Path:
        return Path(run_dir) / self.pattern.format(variant=variant, **fields)

    def glob(self, run_dir, variant: str) -> str:
        """The files of every {method} / {bits} (sorted by glob.glob's caller)."""
        return str(self.path(run_dir, variant, method="*", bits="*"))


# key -> file; the keys are what a Figure's `reads` / `optional` name
LAYOUT: dict[str, ResultFile] = {
    "train_log": ResultFile("models/{variant}/train_log.jsonl", "train"),
    "train_summary": ResultFile("models/{variant}/train_summary.json", "train"),
    "analysis_json": ResultFile("analysis/{variant}.json", "analyze"),
    "analysis_npz": ResultFile("analysis/{variant}.npz", "analyze"),
    "eval": ResultFile("eval/{variant}.json", "evaluate"),
    "quant": ResultFile("quant/{variant}/{method}_{bits}bit.json", "quantize"),
    "dynamics": ResultFile("dynamics/{variant}.json", "dynamics"),
    "knockout": ResultFile("knockout/{variant}.json", "knockout"),
    "passkey": ResultFile("passkey/{variant}.json", "passkey"),
    "mechanism": ResultFile("mechanism/{variant}.json", "mechanism"),
}


def missing_message(key: str, path) -> str:
    """What a figure says when an input is missing: the file, and the stage that makes it."""
    stage = LAYOUT[key].stage
    return f"{path} is missing: run the '{stage}' stage first (`softpick {stage}`, or `snakemake --cores all`)"


def find(run_dir, key: str, variants, strict: bool = False) -> dict:
    """{variant: path} of the files of `key` that exist ({variant: [paths]} for a glob, non-empty lists only).
    strict: a missing file (an empty glob) raises FileNotFoundError naming it and the stage that makes it."""
    entry, out = LAYOUT[key], {}
    for v in variants:
        if entry.is_glob:
            found = sorted(glob.glob(entry.glob(run_dir, v)))
            if found:
                out[v] = found
            elif strict:
                raise FileNotFoundError(missing_message(key, entry.glob(run_dir, v)))
        else:
            p = entry.path(run_dir, v)
            if p.exists():
                out[v] = p
            elif strict:
                raise FileNotFoundError(missing_message(key, p))
    return out


def load_json(path) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_jsonl(path) -> list[dict]:
    """One JSON object per line; a torn (partially written) line is skipped."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a partially written last line
    return out
