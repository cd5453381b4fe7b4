"""Local document files shared by the sources: JSON lines (optionally .gz / .xz) and parquet, read directly or
through ``datasets``' builders; file / glob / directory inputs (``data.path``)."""
from __future__ import annotations

import glob
import gzip
import json
import lzma
import os
from pathlib import Path
from typing import Iterator

from ..paths import resolve_path

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")


def file_format(p: Path) -> str | None:
    """'parquet', 'json' (JSON lines, optionally .gz / .xz) or None for any other file name."""
    name = p.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    for ext in JSON_SUFFIXES:
        for comp in ("", ".gz", ".xz"):
            if name.endswith(ext + comp):
                return "json"
    return None


def open_text(p: Path):
    name = p.name.lower()
    if name.endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8")
    if name.endswith(".xz"):
        return lzma.open(p, "rt", encoding="utf-8")
    return open(p, "r", encoding="utf-8")


def iter_jsonl(p: Path) -> Iterator[tuple[str, str]]:
    """(id, text) per record; the id is the record's "id", else its 0-based line number."""
    with open_text(p) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{p}:{lineno}: invalid JSON ({e})") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str):
                raise ValueError(f"{p}:{lineno}: record has no string 'text' field")
            yield str(rec.get("id", lineno - 1)), rec["text"]


def iter_parquet(p: Path) -> Iterator[tuple[str, str]]:
    """(id, text) per row of the 'text' column; the id is the 'id' column's, else the row number."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(p)
    names = pf.schema_arrow.names
    if "text" not in names:
        raise ValueError(f"{p}: parquet file has no 'text' column (columns: {names})")
    cols = ["text"] + (["id"] if "id" in names else [])
    i = 0
    for batch in pf.iter_batches(columns=cols, batch_size=1024):
        d = batch.to_pydict()
        ids = d.get("id")
        for j, t in enumerate(d["text"]):
            yield (str(ids[j]) if ids is not None else str(i)), t
            i += 1


def local_files(path: str | os.PathLike | list) -> list[str]:
    """The files data.path names: a file, a glob, a directory (its *.parquet, else its JSON-lines files), or a
    list of them; all parquet or all JSON lines. FileNotFoundError / ValueError naming data.path."""
    paths = path if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for p in paths:
        s = str(p)
        rp = resolve_path(s)
        if rp.is_dir():
            found = sorted(str(f) for f in rp.rglob("*.parquet"))
            if not found:
                found = sorted(str(f) for f in rp.rglob("*") if f.is_file() and file_format(f) == "json")
            if not found:
                raise FileNotFoundError(f"data.path: no .parquet/.jsonl files under directory {s}")
            files += found
        elif any(c in s for c in "*?["):
            found = sorted(glob.glob(s, recursive=True))
            if not found:
                raise FileNotFoundError(f"data.path: glob matched no files: {s}")
            files += found
        elif rp.is_file():
            files.append(str(rp))
        else:
            raise FileNotFoundError(f"data.path: file not found: {s}")
    fmts = {file_format(Path(f)) for f in files}
    if None in fmts or len(fmts) != 1:
        raise ValueError(f"data.path: files must all be .parquet or all .jsonl/.json, got {files[:5]}")
    return files


def input_files(path) -> list[str]:
    """The files under data.path for the data rule's inputs and the manifest: as configured where they cannot
    be listed (missing: validation names them); none without data.path (the hub)."""
    if not path:
        return []
    try:
        return local_files(path)
    except (FileNotFoundError, ValueError):
        return list(path) if isinstance(path, (list, tuple)) else [path]


def load_local_dataset(path, **kwargs):
    """The files of data.path through datasets' parquet / json builder (split 'train'), in file order."""
    import datasets

    files = local_files(path)
    builder = "parquet" if file_format(Path(files[0])) == "parquet" else "json"
    return datasets.load_dataset(builder, data_files=files, split="train", **kwargs)
