"""The ``data`` section: defaults and validation.

Keys (JSON schema: workflow/schemas/data.schema.json; unknown keys are rejected):

``source`` (``"embedded"``)
    One of the registered sources (softpick.data.sources: embedded, jsonl, fineweb_edu, slimpajama_val).
``corpus_path`` (``"data/corpus/corpus.jsonl.xz"``)
    The embedded corpus. Relative paths are tried against the working directory, then the repository root.
``path`` (none)
    Input file(s) of the jsonl (required), fineweb_edu and slimpajama_val (optional: local files) sources.
``max_documents`` (none = all)
    Use only the first N documents of the source (in source order).
``val_fraction`` (``0.05``) / ``val_documents`` (none)
    Size of the validation split, as a fraction of documents or as an exact count (not both).
    Documents are assigned whole, by a permutation seeded with ``seed``; each split keeps source order.
``tokenizer``
    ``kind`` (``"bpe"``): ``bpe`` trains a byte-level BPE (``tokenizers``) on the *train* split;
    special tokens ``<unk>`` = 0, ``<s>`` (BOS) = 1, ``</s>`` (EOS) = 2, ``<pad>`` = 3, as in
    Llama-2. ``pretrained`` loads ``AutoTokenizer.from_pretrained(name)`` (the paper: a Llama-2
    tokenizer, vocab 32000, e.g. ``meta-llama/Llama-2-7b-hf``).
    ``vocab_size`` (``8192``): BPE vocabulary size (bpe only; 260..1_000_000).
    ``name``: hub id or local directory (pretrained only; required there).
    ``train_sample_bytes`` (``8_000_000``; 0 = whole train split): BPE training uses a seeded
    subsample of train documents of about this many UTF-8 bytes.

Types and ranges are the schema's (softpick.schema.validate_section); here: the defaults, the source's
required keys and its own checks (input files exist, key combinations).
"""
from __future__ import annotations

import copy
from typing import Any

from ..schema import validate_section
from .sources import SOURCES, get_source

DEFAULTS: dict[str, Any] = {
    "source": "embedded",
    "corpus_path": "data/corpus/corpus.jsonl.xz",
    "path": None,
    "max_documents": None,
    "val_fraction": 0.05,
    "val_documents": None,
    "tokenizer": {
        "kind": "bpe",
        "vocab_size": 8192,
        "name": None,
        "train_sample_bytes": 8_000_000,
    },
}


def normalize_data_config(data_cfg: dict | None) -> dict:
    """Merge ``data_cfg`` over :data:`DEFAULTS` and validate it.

    Raises ``ValueError`` (softpick.config.ConfigError for what the schema says) naming the offending
    key / value, ``FileNotFoundError`` naming a missing input file. Returns a new dict (defaults filled in;
    input paths left as given).
    """
    if data_cfg is None:
        data_cfg = {}
    if not isinstance(data_cfg, dict):
        raise ValueError(f"data config must be a dict, got {type(data_cfg).__name__}")
    tok_in = data_cfg.get("tokenizer", {}) or {}
    if not isinstance(tok_in, dict):
        raise ValueError(f"data.tokenizer must be a dict, got {type(tok_in).__name__}")
    cfg = {**copy.deepcopy(DEFAULTS), **copy.deepcopy(data_cfg)}
    cfg["tokenizer"] = {**DEFAULTS["tokenizer"], **copy.deepcopy(tok_in)}
    if cfg["val_documents"] is not None:  # the default val_fraction gives way to val_documents
        if data_cfg.get("val_fraction") is not None:
            raise ValueError("set only one of data.val_fraction and data.val_documents "
                             "(set data.val_fraction: null when using data.val_documents)")
        cfg["val_fraction"] = None
    if isinstance(cfg["source"], str) and cfg["source"] in SOURCES:  # before the schema: its message says why the source needs the key
        SOURCES[cfg["source"]].check_required(cfg)
    validate_section("data", cfg)
    if cfg["val_fraction"] is not None:
        cfg["val_fraction"] = float(cfg["val_fraction"])
    get_source(cfg["source"]).check(cfg)
    if cfg["val_fraction"] is None and cfg["val_documents"] is None:
        raise ValueError("data.val_fraction must be a number in (0, 1) when data.val_documents is null, got None")
    return cfg
