"""``data.source: embedded``: the committed public-domain corpus, ``data.corpus_path`` (default
data/corpus/corpus.jsonl.xz: ``{"id", "source", "title", "text"}`` per line, xz-compressed; see
data/corpus/SOURCES.md). A relative path is tried against the working directory, then the repository root."""
from __future__ import annotations

import os

from ..paths import resolve_path
from . import Source
from .files import iter_jsonl


def _check(cfg: dict) -> None:
    if not isinstance(cfg["corpus_path"], (str, os.PathLike)) or not str(cfg["corpus_path"]):
        raise ValueError(f"data.corpus_path must be a path, got {cfg['corpus_path']!r}")
    if not resolve_path(cfg["corpus_path"]).is_file():
        raise FileNotFoundError(f"data.corpus_path: embedded corpus not found: {cfg['corpus_path']} "
                                f"(rebuild it with scripts/build_corpus.py)")


def _documents(cfg: dict, stats: dict):
    return iter_jsonl(resolve_path(cfg["corpus_path"]))


SOURCE = Source(
    name="embedded",
    summary="committed public-domain corpus",
    keys=("corpus_path",),
    files=lambda cfg: [cfg.get("corpus_path")],
    documents=_documents,
    check=_check,
)
