"""Zero-shot downstream evaluation and held-out perplexity with lm-evaluation-harness.

Tasks (short names; lm-eval task ``softpick_<name>``): arc_easy, arc_challenge, lambada, piqa,
hellaswag, winogrande, boolq, openbookqa, sciq. Their YAMLs (src/softpick/lm_eval_tasks/) mirror
lm-eval's own definitions (same doc_to_text / doc_to_choice / doc_to_target / metrics, lm-eval's
own utils via ``!function``) but read the offline files in data/tasks/ (built by
scripts/build_tasks.py, sha256-checked against data/tasks/manifest.json) through
``custom_dataset: !function loader.load_task`` (lm_eval_tasks/loader.py): the YAMLs work as shipped
with ``lm_eval --include_path``; this module passes limit / val_docs as task metadata. The
TaskManager is built with ``include_defaults=False`` (indexing lm-eval's thousands of YAMLs would
cost seconds).

The held-out perplexity task (``softpick_val_ppl``) replaces WikiText: lm-eval's
loglikelihood_rolling protocol over whole documents of ``val_docs.jsonl`` (windows of
``max_length`` tokens, the first one prefixed with BOS), reported as word_perplexity,
byte_perplexity and bits_per_byte (wikitext's metrics).

Protocol (pinned): 0-shot, first ``limit`` documents of each task in file order (no shuffling),
first ``ppl_max_docs`` documents of val_docs, HFLM on the given model object, texts encoded
without special tokens (add_bos_token=False; BOS only prefixes empty contexts and the first
perplexity window), float32,
max_length from the config, lm-eval seeds fixed, bootstrap stderr single-process (1000 draws).

    python -m softpick evaluate --variant softpick   # the evaluate stage: results/<run>/eval/softpick.json
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from .atomic import write_json_atomic
from .finite import check_finite_metrics
from .lm_eval_tasks import loader
from .loading import load_model_and_tokenizer

# read at run time besides the modules (softpick.stages.code): the task definitions lm-eval loads
# through --include_path, with the loader they name
PACKAGE_FILES = ("lm_eval_tasks/*.yaml", "lm_eval_tasks/*.py")

TASKS: tuple[str, ...] = ("arc_easy", "arc_challenge", "lambada", "piqa", "hellaswag", "winogrande",
                          "boolq", "openbookqa", "sciq")
PPL_TASK = "val_ppl"
PREFIX = "softpick_"
SEED = 1234
BOOTSTRAP_ITERS = 1000
# metric keys copied into the output (when lm-eval reports them), per task
_TASK_METRICS = ("acc", "acc_norm", "perplexity")
_PPL_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")

def tasks_dir() -> Path:
    """The shipped task YAMLs (lm-eval --include_path); their data is found by lm_eval_tasks/loader.py."""
    return Path(str(resources.files("softpick.lm_eval_tasks")))


def task_data_dir() -> Path:
    """The offline task files: $SOFTPICK_TASK_DATA, else the package's copy, else ./data/tasks."""
    return loader.task_data_dir()


def load_manifest(data_dir: Path | None = None) -> dict:
    return loader.load_manifest(data_dir)


def load_task_docs(task: str, data_dir: Path | None = None) -> list[dict]:
    """The raw rows of one offline task file (for tests and inspection)."""
    return loader.read_task_rows(task, data_dir)


def _check_tasks(tasks) -> list[str]:
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known: {list(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"duplicate tasks in {tasks}")
    return tasks


def task_metadata(limit: int | None, val_docs: Path | None, ppl_max_docs: int | None,
                  data_dir: Path | None = None) -> dict:
    """What the shipped YAMLs' loaders read (lm-eval task metadata): the first `limit` rows of each
    (sha256-checked) task file, the first `ppl_max_docs` documents of val_docs: the same document
    selection as lm-eval's own ``limit`` (the first N documents of the split, in file order)."""
    return {"task_data": str(Path(data_dir or task_data_dir()).resolve()), "doc_limit": limit,
            "val_docs": str(Path(val_docs).resolve()) if val_docs is not None else None,
            "ppl_max_docs": ppl_max_docs}


def task_sizes(tasks: list[str], limit: int | None, data_dir: Path | None = None) -> dict[str, int]:
    """{lm-eval task name: number of documents} from the manifest's row counts."""
    manifest = load_manifest(data_dir)
    return {PREFIX + t: min(manifest[t]["rows"], limit or manifest[t]["rows"]) for t in tasks}


def seed_everything(seed: int = SEED) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def _quiet(level: int = logging.ERROR):
    """lm-eval logs INFO per task and a WARNING per truncated request / defaulted task option; keep errors."""
    names = ("lm_eval", "lm-eval", "datasets", "transformers", "evaluate", "filelock", "fsspec")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(level)
    env = {"DISABLE_MULTIPROC": "1", "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1",
           "HF_HUB_OFFLINE": "1"}
    saved_env = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        import datasets

        progress = datasets.utils.logging.is_progress_bar_enabled()
        datasets.disable_progress_bars()
    except Exception:  # pragma: no cover
        progress = None
    try:
        yield
    finally:
        for n, lv in saved.items():
            logging.getLogger(n).setLevel(lv)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if progress:
            import datasets

            datasets.enable_progress_bars()


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _pick(res: dict, metrics) -> dict[str, float | None]:
    out = {}
    for m in metrics:
        if f"{m},none" in res:
            out[m] = _finite(res[f"{m},none"])
            se = res.get(f"{m}_stderr,none")
            out[f"{m}_stderr"] = _finite(se)
    return out


def evaluate_model(model, tokenizer, *, tasks: list[str], limit: int | None, val_docs: str | Path | None,
                   ppl_max_docs: int | None, batch_size: int, device: str, max_length: int,
                   data_dir: str | Path | None = None) -> dict:
    """Evaluate a causal LM object with lm-eval on `tasks` and (if val_docs) held-out perplexity.

    Returns {"tasks": {name: {"acc", "acc_stderr", "acc_norm", ..., "n"}}, "perplexity": {...} | None,
    "limit", "ppl_max_docs", "lm_eval_version", "protocol", "seconds"}."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    t0 = time.perf_counter()
    tasks = _check_tasks(tasks)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    if ppl_max_docs is not None and ppl_max_docs < 1:
        raise ValueError(f"ppl_max_docs must be >= 1 or None, got {ppl_max_docs}")
    if not tasks and val_docs is None:
        raise ValueError("nothing to evaluate: no tasks and no val_docs")
    seed_everything()
    model.eval()
    model.to(device)

    with _quiet():
        for t in tasks:  # fail on a missing / altered task file before lm-eval starts
            loader.read_task_rows(t, data_dir, 1)
        sizes = task_sizes(tasks, limit, data_dir)
        if val_docs is not None:
            sizes[PREFIX + PPL_TASK] = len(loader.load_val_docs("test", str(val_docs), ppl_max_docs)["test"])
        # add_bos_token=False: texts are encoded without the tokenizer's special tokens whatever its
        # post-processor does; BOS (prefix_token_id) is prepended only to empty contexts and to the
        # first rolling window of a perplexity document (lm-eval's wikitext protocol).
        lm = HFLM(pretrained=model, tokenizer=tokenizer, backend="causal", batch_size=batch_size,
                  max_batch_size=batch_size, device=device, max_length=max_length, dtype=torch.float32,
                  add_bos_token=False)
        tm = TaskManager(include_path=str(tasks_dir()), include_defaults=False,
                         metadata=task_metadata(limit, val_docs, ppl_max_docs, data_dir))
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(sizes), num_fewshot=0, limit=None, task_manager=tm,
            bootstrap_iters=BOOTSTRAP_ITERS, log_samples=False, random_seed=SEED, numpy_random_seed=SEED,
            torch_random_seed=SEED, fewshot_random_seed=SEED, cache_requests=False,
        )
    results, n_samples = out["results"], out.get("n-samples", {})
    task_out = {}
    for t in tasks:
        name = PREFIX + t
        row = _pick(results[name], _TASK_METRICS)
        row["n"] = int(n_samples.get(name, {}).get("effective", sizes[name]))
        task_out[t] = row
    ppl = None
    if val_docs is not None:
        name = PREFIX + PPL_TASK
        ppl = {m: _finite(results[name].get(f"{m},none")) for m in _PPL_METRICS}
        ppl["n_docs"] = int(n_samples.get(name, {}).get("effective", sizes[name]))
    return {
        "tasks": task_out,
        "perplexity": ppl,
        "limit": limit,
        "ppl_max_docs": ppl_max_docs,
        "lm_eval_version": getattr(lm_eval, "__version__", None) or _dist_version("lm_eval"),
        "protocol": {"num_fewshot": 0, "max_length": max_length, "batch_size": batch_size,
                     "prefix_token_id": lm.prefix_token_id, "add_bos_token": lm.add_bos_token,
                     "dtype": "float32", "seed": SEED, "bootstrap_iters": BOOTSTRAP_ITERS},
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def check_eval_metrics(record: dict, source) -> None:
    """NonFiniteError when an accuracy / perplexity of `record` is NaN, inf or missing (stderrs may be null)."""
    check_finite_metrics({"tasks": record["tasks"], "perplexity": record.get("perplexity") or {}}, source,
                         optional=lambda path: path.endswith("_stderr"))


def eval_kwargs(eval_cfg: dict) -> dict:
    """The evaluate_model keyword arguments from the config's `eval` section."""
    return {"tasks": list(eval_cfg.get("tasks", TASKS)), "limit": eval_cfg.get("limit"),
            "ppl_max_docs": eval_cfg.get("ppl_max_docs"), "batch_size": int(eval_cfg.get("batch_size", 32)),
            "max_length": int(eval_cfg.get("max_length", 256))}


def evaluate_dir(model_dir: str | Path, eval_cfg: dict, val_docs: str | Path | None, out_json: str | Path,
                 device: str = "cpu") -> dict:
    """Load model_dir, evaluate it per eval_cfg, write out_json atomically; returns the record."""
    t0 = time.perf_counter()
    model, tokenizer = load_model_and_tokenizer(model_dir, device)  # files checked against the manifest first
    res = evaluate_model(model, tokenizer, val_docs=val_docs, device=device, **eval_kwargs(eval_cfg))
    record = {"model_dir": str(model_dir), **res, "seconds": round(time.perf_counter() - t0, 3)}
    check_eval_metrics(record, out_json)
    write_json_atomic(out_json, record)
    return record
