"""Datasets of the softpick_* lm-eval tasks: each YAML names `custom_dataset: !function loader.<fn>`.

lm-eval loads this file by its path beside the YAMLs (so `--include_path` works as shipped, even in a
process that cannot import softpick) and calls the function with the YAML's dataset_kwargs (task,
split) and the task metadata: the YAML's own, lm-eval's --metadata JSON / TaskManager(metadata=...),
and on the command line also the --model_args; unknown keys are ignored. Keys read here:

  task_data     folder of the offline task files (default: $SOFTPICK_TASK_DATA, else the copy shipped
                in the package, softpick/_resources/tasks, else data/tasks of the working directory)
  doc_limit     keep the first N rows of each task file (the pipeline's eval.limit; lm-eval's own
                --limit selects the same first N documents)
  val_docs      softpick_val_ppl: the held-out documents, results/<run>/data/val_docs.jsonl
  ppl_max_docs  softpick_val_ppl: the first N of them

Every task file is checked against the sha256 in the folder's manifest.json before it is read.
"""
from __future__ import annotations

import hashlib
import json
import lzma
import os
from pathlib import Path

_verified: dict[Path, str] = {}


def task_data_dir(task_data: str | Path | None = None) -> Path:
    explicit = task_data or os.environ.get("SOFTPICK_TASK_DATA")
    if explicit:
        return Path(explicit).resolve()
    packaged = Path(__file__).resolve().parent.parent / "_resources" / "tasks"
    return (packaged if (packaged / "manifest.json").exists() else Path.cwd() / "data" / "tasks").resolve()


def load_manifest(data_dir: str | Path | None = None) -> dict:
    path = task_data_dir(data_dir) / "manifest.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run scripts/build_tasks.py, or set SOFTPICK_TASK_DATA / "
                                "the task_data metadata key to the folder of the task files")
    return json.loads(path.read_text())["tasks"]


def _check_sha(path: Path, expected: str) -> None:
    if _verified.get(path) == expected:
        return
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise ValueError(f"{path}: sha256 {digest} does not match its manifest.json ({expected})")
    _verified[path] = expected


def iter_jsonl(path: Path):
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def _first(rows, n: int | None) -> list[dict]:
    if n is not None and int(n) < 1:
        raise ValueError(f"a document limit must be >= 1 or null, got {n}")
    out = []
    for row in rows:
        if n is not None and len(out) >= int(n):
            break
        out.append(row)
    return out


def read_task_rows(task: str, task_data: str | Path | None = None, doc_limit: int | None = None) -> list[dict]:
    """The first doc_limit rows (all when None) of one task's sha256-checked file."""
    data_dir = task_data_dir(task_data)
    manifest = load_manifest(data_dir)
    if task not in manifest:
        raise KeyError(f"task {task!r} is not in {data_dir / 'manifest.json'} (known: {sorted(manifest)})")
    path = data_dir / manifest[task]["file"]
    _check_sha(path, manifest[task]["sha256"])
    return _first(iter_jsonl(path), doc_limit)


def _dataset(rows: list[dict], split: str):
    import datasets

    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows)})


def load_task(task: str, split: str, task_data: str | None = None, doc_limit: int | None = None, **_):
    return _dataset(read_task_rows(task, task_data, doc_limit), split)


def load_val_docs(split: str, val_docs: str | None = None, ppl_max_docs: int | None = None, **_):
    if not val_docs:
        raise ValueError("softpick_val_ppl needs the held-out documents: --metadata "
                         "'{\"val_docs\": \"results/<run>/data/val_docs.jsonl\"}'")
    rows = _first(iter_jsonl(Path(val_docs)), ppl_max_docs)
    if not rows:
        raise ValueError(f"{val_docs} holds no documents")
    return _dataset(rows, split)
