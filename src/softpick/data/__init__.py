"""Data stage: documents -> tokenizer -> train/val token files, and their readers.

Entry point: :func:`prepare_data(data_cfg, out_dir, seed) <prepare_data>` (softpick.data.stage); readers for
the stages that train or measure: :func:`load_tokens`, :class:`TokenDataset`, :func:`load_tokenizer`,
:func:`verify_data_dir` (softpick.data.readers).

Modules: ``settings`` (the data section: defaults, validation), ``sources`` (one module per
``data.source`` behind a registry: embedded, jsonl, fineweb_edu, slimpajama_val), ``tokenizer`` (BPE
training, pretrained loading), ``packing`` (split, token and offset files), ``manifest`` (manifest.json,
sha256 of every output and input file), ``readers`` (checks against the manifest), ``hub`` (the Hugging
Face hub: one clear error when it is off or unreachable), ``paths`` (where inputs are found).
"""
from __future__ import annotations

from .hub import DataSourceUnavailableError
from .packing import SPLITS, split_documents
from .readers import DataIntegrityError, TokenDataset, load_tokens, verify_data_dir
from .settings import DEFAULTS, normalize_data_config
from .sources import SOURCES, corpus_files, get_source
from .sources.fineweb_edu import CONFIG as FINEWEB_EDU_CONFIG
from .sources.fineweb_edu import DATASET as FINEWEB_EDU_DATASET
from .stage import load_documents, prepare_data
from .tokenizer import load_tokenizer, train_bpe_tokenizer

__all__ = [
    "DEFAULTS",
    "DataIntegrityError",
    "DataSourceUnavailableError",
    "FINEWEB_EDU_DATASET",
    "FINEWEB_EDU_CONFIG",
    "SOURCES",
    "SPLITS",
    "TokenDataset",
    "corpus_files",
    "get_source",
    "load_documents",
    "load_tokenizer",
    "load_tokens",
    "normalize_data_config",
    "prepare_data",
    "split_documents",
    "train_bpe_tokenizer",
    "verify_data_dir",
]
