"""``data.source: slimpajama_val``: the authors' measurement data.

Their analysis reads ``Phando/SlimPajama-val-sampled`` (split ``validation``) and takes the first 1000
documents in dataset order, skipping empty texts; each is tokenized with the model's tokenizer (BOS
first) and truncated, never packed. Here the validation split is the first ``data.val_documents``
non-empty documents in dataset order (no shuffling), and the training split (GPTQ calibration, the
mechanism stage) the documents after them, up to ``data.max_documents`` in all. The data directory has
the usual layout, so every stage reads it unchanged; the analysis option ``analysis.keep_eos: false``
drops the closing EOS as the authors' tokenization has none.

Keys: ``tokenizer`` (kind pretrained: the model's, e.g. fla-hub/transformer-1.3B-100B), ``val_documents``
(required; the authors: 1000), ``max_documents`` (null = all), ``path`` (optional local copy of the
dataset: parquet / json[l] files, a glob or a directory, read with datasets' builders in file order;
without it the Hugging Face Hub must be reachable, else one error naming the dataset at once).
"""
from __future__ import annotations

import logging

import numpy as np

from ..hub import open_hub_dataset
from . import Source
from .files import input_files, load_local_dataset, local_files

log = logging.getLogger(__name__)

NAME = "slimpajama_val"
DATASET = "Phando/SlimPajama-val-sampled"
SPLIT = "validation"


def _check(cfg: dict) -> None:
    if cfg["tokenizer"]["kind"] != "pretrained" or not cfg["tokenizer"].get("name"):
        raise ValueError(f"data.tokenizer: source {NAME!r} is tokenized with the model's tokenizer: set "
                         "kind: pretrained and name (e.g. fla-hub/transformer-1.3B-100B)")
    nval, nmax = cfg["val_documents"], cfg["max_documents"]
    if nmax is not None and nmax <= nval:
        raise ValueError(f"data.max_documents ({nmax!r}) must be null or larger than data.val_documents ({nval})")
    if cfg["path"]:
        local_files(cfg["path"])  # the same file / glob / directory rules as fineweb_edu; names data.path


def _documents(cfg: dict, stats: dict):
    """The non-empty documents in dataset order; stats["skipped_empty_documents"] counts the empty ones."""
    if cfg["path"]:
        ds = load_local_dataset(cfg["path"])
    else:
        ds = open_hub_dataset(f"dataset '{DATASET}' (split '{SPLIT}')", DATASET, split=SPLIT)
    if "text" not in ds.column_names:
        raise ValueError(f"{cfg['path'] or DATASET}: no 'text' column (columns: {ds.column_names})")
    stats["skipped_empty_documents"] = 0
    for i, ex in enumerate(ds):
        text = ex["text"]
        if not isinstance(text, str) or not text.strip():
            stats["skipped_empty_documents"] += 1  # the authors' loop skips empty texts; they do not count
            continue
        yield (str(ex["id"]) if ex.get("id") is not None else str(i)), text


def _split(cfg: dict, n_docs: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The first val_documents documents for validation, the rest (or, when none is left, the same) for training."""
    nval = cfg["val_documents"]
    if n_docs < nval:
        raise ValueError(f"data.val_documents is {nval} but {cfg['path'] or DATASET} has only {n_docs} non-empty documents")
    val, train = np.arange(nval), np.arange(nval, n_docs)
    train_note = "the documents after the validation split"
    if train.size == 0:  # nothing left: GPTQ calibration and the mechanism stage read the same documents
        log.warning("no documents after the first %d: the train split repeats the validation documents", nval)
        train, train_note = val, "the validation documents again (the dataset has no more)"
    return train, val, {"train": train_note, "val": f"the first {nval} non-empty documents in dataset order"}


SOURCE = Source(
    name=NAME,
    summary=(f"the authors' analysis data, {DATASET} split {SPLIT} (hub, or local files), the first "
             "val_documents documents in order as the validation split"),
    keys=("path", "val_documents"),
    files=lambda cfg: input_files(cfg.get("path")),
    documents=_documents,
    check=_check,
    required={"val_documents": "the validation split is the first val_documents documents in dataset order "
                               "(the authors: 1000)"},
    split=_split,
    dataset=lambda cfg: None if cfg.get("path") else f"{DATASET}/{SPLIT}",
)
