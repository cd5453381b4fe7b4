"""``data.source: jsonl``: one local file, ``data.path``: JSON lines (``.jsonl`` / ``.json`` / ``.ndjson``,
optionally ``.gz`` / ``.xz``) or ``.parquet``, with a string ``"text"`` field (``"id"`` used when present,
else the line / row number)."""
from __future__ import annotations

import os

from ..paths import resolve_path
from . import Source
from .files import file_format, iter_jsonl, iter_parquet


def _check(cfg: dict) -> None:
    if not isinstance(cfg["path"], (str, os.PathLike)):
        raise ValueError(f"data.path must be a single file path for source 'jsonl', got {cfg['path']!r}")
    p = resolve_path(cfg["path"])
    if not p.is_file():
        raise FileNotFoundError(f"data.path: file not found: {cfg['path']}")
    if file_format(p) is None:
        raise ValueError(f"data.path: unsupported file type {p.name!r} (expected .jsonl/.json[.gz|.xz] or .parquet)")


def _documents(cfg: dict, stats: dict):
    p = resolve_path(cfg["path"])
    return iter_parquet(p) if file_format(p) == "parquet" else iter_jsonl(p)


SOURCE = Source(
    name="jsonl",
    summary="local .jsonl/.json[.gz|.xz] or .parquet file with a 'text' field",
    keys=("path",),
    files=lambda cfg: [cfg.get("path")],
    documents=_documents,
    check=_check,
    required={"path": "the file to read"},
)
