"""``manifest.json`` of a data directory: counts, dtypes, sha256 and size of every file written, the
tokenizer, source, seed, normalized config, and ``corpus``: path, size and sha256 of every local input file
the source read (none for the hub). softpick.data.readers checks a directory against it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import sha256_file, write_bytes_atomic
from .paths import resolve_path

MANIFEST_VERSION = 1


def input_records(paths: list[str]) -> list[dict]:
    """{"path", "bytes", "sha256"} of each input file (paths as corpus_files shows them)."""
    return [{"path": p, "bytes": resolve_path(p).stat().st_size, "sha256": sha256_file(resolve_path(p))} for p in paths]


def jsonable(x):
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def tokenizer_entry(tok, kind: str, name: str | None) -> dict:
    return {
        "kind": kind,
        "name": name,
        "vocab_size": int(len(tok)),
        "bos_token_id": int(tok.bos_token_id),
        "eos_token_id": int(tok.eos_token_id),
        "pad_token_id": None if tok.pad_token_id is None else int(tok.pad_token_id),
        "unk_token_id": None if tok.unk_token_id is None else int(tok.unk_token_id),
        "dir": "tokenizer",
    }


def write_manifest(out: Path, manifest: dict) -> dict:
    """Add the size of every listed file, write manifest.json atomically; return the manifest."""
    manifest["sizes"] = {name: (out / name).stat().st_size for name in manifest["files"]}
    write_bytes_atomic(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest
