"""Readers of a prepared data directory (what train / evaluate / analysis import).

Every reader checks the directory against its manifest first: :func:`verify_data_dir` (called by
:func:`load_tokens` and by ``softpick.cli.run_stage`` for each stage that reads data) compares size
and sha256 of each file the reader uses, loads the tokenizer, and checks that every token id is below
its vocabulary size; a :class:`DataIntegrityError` names each bad file and what is wrong with it. It also
checks the corpus files the manifest lists, where they exist on this machine: an edited corpus means stale
token files (size always; sha256 up to CORPUS_HASH_LIMIT bytes per file, larger ones by size only).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..atomic import sha256_file
from .packing import SPLITS
from .paths import resolve_path
from .tokenizer import load_tokenizer

CORPUS_HASH_LIMIT = 1 << 30  # verify_data_dir re-hashes corpus files up to this size (every stage job)


class DataIntegrityError(ValueError):
    """A prepared data directory does not match its manifest (missing, changed, truncated or unusable
    file); the message names every bad file and what is wrong."""


_PASSED: set[tuple] = set()  # checks already passed in this process, keyed by the files' stat
_TOKENIZER_VOCAB: dict[tuple, int] = {}  # stat of the tokenizer files -> vocabulary size


def _stat_key(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def _once(key: tuple, check, *args) -> str | None:
    """Run check(*args) unless it passed before for the same key; return its problem (None = fine)."""
    if key in _PASSED:
        return None
    problem = check(*args)
    if problem is None:
        _PASSED.add(key)
    return problem


def _check_file(path: Path, expected_sha: str, expected_size: int | None) -> str | None:
    """What is wrong with one listed file (None when it matches the manifest)."""
    if not path.is_file():
        return f"{path} is missing (deleted after the data stage wrote it?)"
    size = path.stat().st_size
    if size == 0:
        return f"{path} is empty (0 bytes" + (f"; the manifest records {expected_size})" if expected_size else ")")
    if expected_size is not None and size != expected_size:
        how = "truncated" if size < expected_size else "longer than written"
        return f"{path} is {size} bytes, the manifest records {expected_size} ({how})"
    digest = sha256_file(path)
    if digest != expected_sha:
        return (f"{path}: sha256 {digest[:16]}... does not match the manifest ({expected_sha[:16]}...): "
                f"the file was changed after the data stage wrote it")
    return None


def _check_corpus_file(entry: dict) -> str | None:
    """What is wrong with one corpus file the data stage read (None when unchanged, or not on this machine)."""
    path = resolve_path(entry["path"])
    if not path.is_file():
        return None  # e.g. results pulled to a machine without the corpus: nothing to compare
    size = path.stat().st_size
    stale = "the token files were made from the earlier version"
    if size != entry["bytes"]:
        return f"corpus file {path} is {size} bytes, the manifest records {entry['bytes']}: edited after the data stage read it; {stale}"
    if size <= CORPUS_HASH_LIMIT and sha256_file(path) != entry["sha256"]:
        return (f"corpus file {path}: sha256 does not match the manifest ({entry['sha256'][:16]}...): edited after the "
                f"data stage read it; {stale}")
    return None


def _check_token_ids(path: Path, vocab_size: int) -> str | None:
    try:
        tokens = np.load(path, mmap_mode="r")
    except (ValueError, OSError, EOFError) as e:
        return f"{path} is not a readable .npy token file ({e})"
    if tokens.ndim != 1 or tokens.dtype.kind not in "ui":
        return f"{path} holds a {tokens.dtype} array of shape {tokens.shape}, expected 1-D integer token ids"
    top = int(tokens.max()) if tokens.size else -1
    if top >= vocab_size:
        n_bad = int(np.count_nonzero(tokens >= vocab_size))
        return (f"{path} holds {n_bad} out-of-vocabulary token id(s) (max {top} >= the tokenizer's "
                f"vocab size {vocab_size})")
    return None


def _tokenizer_vocab(data_dir: Path) -> tuple[int | None, str | None]:
    try:
        return len(load_tokenizer(data_dir)), None
    except Exception as e:  # any failure of transformers to read the directory
        return None, f"tokenizer directory {data_dir / 'tokenizer'} is broken: {type(e).__name__}: {e}"


def verify_data_dir(data_dir: str | os.PathLike, splits: tuple[str, ...] | list[str] = SPLITS) -> dict:
    """Check a prepared data directory against its ``manifest.json`` before a stage reads it.

    Checked: size and sha256 of the tokenizer files, ``val_docs.jsonl`` and the token / offset files
    of ``splits`` (the splits the caller reads); the tokenizer directory exists and loads; every token
    id of those splits is below the tokenizer's vocabulary size. Raises :class:`DataIntegrityError`
    naming each bad file and what is wrong; returns the manifest. Each check runs once per process
    while its files are unchanged (their stat is the cache key), so a stage that verifies and then
    calls :func:`load_tokens` hashes nothing twice; under torchrun only each node's local rank 0
    verifies (a failure there stops the job).
    """
    data_dir = Path(data_dir)
    splits = tuple(splits)
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    rerun = "rerun the data stage (snakemake --forcerun data, or python -m softpick data)"
    manifest_path = data_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DataIntegrityError(f"{manifest_path} is missing: run the data stage first ({rerun})")
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, str] = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise DataIntegrityError(f"{manifest_path} is not a data manifest ({e!r}): {rerun}") from None
    if int(os.environ.get("LOCAL_RANK", "0") or 0) > 0:
        return manifest
    sizes = manifest.get("sizes", {})  # absent in manifests written before sizes were recorded
    used = {f"tokens_{s}.npy" for s in splits} | {f"docs_{s}.npy" for s in splits} | {"val_docs.jsonl"}
    tok_dir = data_dir / "tokenizer"
    tok_files = sorted(n for n in files if n.startswith("tokenizer/"))
    problems: list[str] = []
    failed: set[str] = set()
    if not tok_dir.is_dir():
        problems.append(f"tokenizer directory {tok_dir} is missing (deleted after the data stage wrote it?)")
        failed.update(tok_files)
    for name in sorted(n for n in files if n in used) + ([] if failed else tok_files):
        path = data_dir / name
        problem = _once(("file", _stat_key(path), files[name]), _check_file, path, files[name], sizes.get(name))
        if problem:
            problems.append(problem)
            failed.add(name)
    vocab_size = manifest.get("tokenizer", {}).get("vocab_size")
    if not failed.intersection(tok_files):
        tok_key = tuple(_stat_key(data_dir / n) for n in tok_files)
        if tok_key not in _TOKENIZER_VOCAB:
            vocab, problem = _tokenizer_vocab(data_dir)
            if problem:
                problems.append(problem)
            else:
                _TOKENIZER_VOCAB[tok_key] = vocab
        vocab_size = _TOKENIZER_VOCAB.get(tok_key, vocab_size)
    for entry in manifest.get("corpus") or []:  # absent in manifests written before corpora were recorded
        problem = _once(("corpus", _stat_key(resolve_path(entry["path"])), entry["sha256"]),
                        _check_corpus_file, entry)
        if problem:
            problems.append(problem)
    for split in splits:
        path = data_dir / f"tokens_{split}.npy"
        size = path.stat().st_size if path.is_file() else 0
        if path.name in files and vocab_size and size and sizes.get(path.name, size) == size:
            problem = _once(("ids", _stat_key(path), vocab_size), _check_token_ids, path, int(vocab_size))
            if problem:
                problems.append(problem)
    if problems:
        raise DataIntegrityError(f"data directory {data_dir} does not match its manifest.json:\n  "
                                 + "\n  ".join(problems) + f"\n{rerun}")
    return manifest


def load_tokens(out_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(tokens, offsets)`` for ``split`` after :func:`verify_data_dir`; ``tokens`` is
    memory-mapped (read-only)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    verify_data_dir(out_dir, (split,))
    out = Path(out_dir)
    tp, op = out / f"tokens_{split}.npy", out / f"docs_{split}.npy"
    for p in (tp, op):
        if not p.is_file():
            raise FileNotFoundError(f"{p} not found (run prepare_data first)")
    tokens = np.load(tp, mmap_mode="r")
    offsets = np.load(op)
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != tokens.shape[0]:
        raise ValueError(f"{op} does not match {tp} (offsets end {offsets[-1]}, tokens {tokens.shape[0]})")
    return tokens, offsets


class TokenDataset:
    """Read-only view of one split: ``len(ds)`` documents, ``ds[i]`` the tokens of document i
    (``[BOS] ... [EOS]``), ``ds.tokens`` the memory-mapped stream, ``ds.offsets`` the boundaries."""

    def __init__(self, out_dir: str | os.PathLike, split: str = "train"):
        self.out_dir = Path(out_dir)
        self.split = split
        self.tokens, self.offsets = load_tokens(out_dir, split)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)

    def __getitem__(self, i: int) -> np.ndarray:
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"document index {i} out of range for {n} documents")
        return self.tokens[self.offsets[i]: self.offsets[i + 1]]

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    def __repr__(self) -> str:
        return f"TokenDataset({str(self.out_dir)!r}, {self.split!r}: {len(self)} docs, {self.n_tokens} tokens)"
