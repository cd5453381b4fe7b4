"""The data sources (``data.source``), one module each, behind one registry.

A :class:`Source` declares its name, a one-line summary (the config schema's description of
``data.source``, whose enum softpick.config fills from :data:`SOURCES` when it loads the schema), the
data keys it reads and those it requires, the local files it reads (the data rule's inputs and the
manifest's ``corpus``), and how it yields documents. The common keys (``max_documents``, the split sizes,
``tokenizer``) are the data stage's (softpick.data.stage); a source may replace the seeded split.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..packing import seeded_split
from ..paths import resolve_path, shown_path

Documents = Iterator[tuple[str, str]]  # (id, text) in source order


@dataclass(frozen=True)
class Source:
    name: str
    summary: str  # one line: the schema's description of this value of data.source
    keys: tuple[str, ...]  # the source-specific data keys it reads (beyond max_documents, the split, tokenizer)
    files: Callable[[dict], list[str]]  # local input files as configured (may be missing; not checked)
    documents: Callable[[dict, dict], Documents]  # (cfg, stats) -> (id, text); stats: counts for the manifest
    check: Callable[[dict], None] = lambda cfg: None  # what the schema cannot say; names the key or file
    required: dict[str, str] = field(default_factory=dict)  # key -> why this source needs it
    split: Callable[[dict, int, int], tuple] = seeded_split  # (cfg, n_docs, seed) -> (train, val, notes)
    dataset: Callable[[dict], str | None] = lambda cfg: None  # hub dataset read (manifest "dataset")

    def check_required(self, cfg: dict) -> None:
        """ValueError naming the first required key that is unset, and why this source needs it."""
        for key, why in self.required.items():
            if cfg.get(key) is None:
                raise ValueError(f"data.{key} is required when data.source is {self.name!r}: {why}")

    def describe(self) -> str:
        """'name (data.key, ...): summary', a line of the schema's description of data.source."""
        return f"{self.name} ({', '.join('data.' + k for k in self.keys)}): {self.summary}"


def _load_registry() -> dict[str, Source]:
    from . import embedded, fineweb_edu, jsonl, slimpajama_val

    return {s.name: s for s in (embedded.SOURCE, jsonl.SOURCE, fineweb_edu.SOURCE, slimpajama_val.SOURCE)}


SOURCES: dict[str, Source] = _load_registry()


def get_source(name: str) -> Source:
    if name not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {name!r}")
    return SOURCES[name]


def corpus_files(data_cfg: dict | None) -> list[str]:
    """The local files the configured source reads (the embedded corpus, the jsonl / parquet file, the
    FineWeb-Edu or SlimPajama files under data.path; none for the hub), as paths relative to the working directory or the
    repository when under one. A missing file is listed as configured (the Snakefile makes these the
    data rule's inputs: Snakemake names a missing one, or builds data/corpus-large); no other checks."""
    from ..settings import DEFAULTS

    cfg = {**DEFAULTS, **(data_cfg or {})}
    source = SOURCES.get(cfg.get("source")) if isinstance(cfg.get("source"), str) else None
    out = []
    for p in source.files(cfg) if source else []:
        if not isinstance(p, (str, os.PathLike)) or not str(p) or any(c in str(p) for c in "*?["):
            continue  # a bad value (validation names it) or a glob that matched nothing
        resolved = resolve_path(p)
        out.append(shown_path(resolved) if resolved.exists() else str(p))
    return sorted(set(out), key=out.index)
