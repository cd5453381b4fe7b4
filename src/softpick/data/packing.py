"""Documents -> train / validation token files.

``tokens_{split}.npy``: 1-D uint16 (vocab <= 65535) or uint32, each document ``[BOS] + ids + [EOS]``,
documents concatenated; ``docs_{split}.npy``: int64 offsets, length ``n_docs + 1`` (document i is
``tokens[off[i]:off[i+1]]``); ``val_docs.jsonl``: the validation documents' raw text, ``{"id", "text"}`` per
line. The split is document-level: by default a seeded permutation (:func:`split_documents`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, sha256_file, write_bytes_atomic

SPLITS = ("train", "val")


def split_documents(n_docs: int, seed: int, val_fraction: float | None = None,
                    val_documents: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return sorted ``(train_idx, val_idx)``: a seeded, document-level, disjoint split of ``range(n_docs)``."""
    if n_docs < 2:
        raise ValueError(f"need at least 2 documents to split, got {n_docs}")
    if val_documents is not None:
        n_val = int(val_documents)
        if n_val >= n_docs:
            raise ValueError(f"data.val_documents={n_val} must be smaller than the number of documents ({n_docs})")
    else:
        n_val = min(max(1, int(round(float(val_fraction) * n_docs))), n_docs - 1)
    perm = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5EED5])).permutation(n_docs)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def seeded_split(cfg: dict, n_docs: int, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """A source's default split (:func:`split_documents` with data.val_fraction / val_documents); no notes."""
    if n_docs < 2:
        raise ValueError(f"data source {cfg['source']!r} yielded {n_docs} document(s); need at least 2")
    train, val = split_documents(n_docs, seed, cfg["val_fraction"], cfg["val_documents"])
    return train, val, {}


def encode(tok, texts: list[str], bos: int, eos: int, dtype, desc: str, batch_size: int = 256):
    """(tokens, offsets) of ``texts``, each framed ``[BOS] ids [EOS]``."""
    from tqdm.auto import tqdm

    # Special-token strings inside documents (e.g. the HTML tag "<s>" in web text) are encoded as
    # plain text: BOS/EOS ids appear only at the document boundaries added here.
    backend = getattr(tok, "backend_tokenizer", None)
    lengths = np.zeros(len(texts), dtype=np.int64)
    chunks: list[np.ndarray] = []
    prev = getattr(backend, "encode_special_tokens", None) if backend is not None else None
    try:
        if backend is not None:
            backend.encode_special_tokens = True
        with tqdm(total=len(texts), desc=desc, unit="doc", disable=None) as bar:
            for s in range(0, len(texts), batch_size):
                batch = texts[s: s + batch_size]
                if backend is not None:
                    ids_list = [e.ids for e in backend.encode_batch(batch, add_special_tokens=False)]
                else:
                    ids_list = tok(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]
                for j, ids in enumerate(ids_list):
                    arr = np.empty(len(ids) + 2, dtype=dtype)
                    arr[0], arr[-1] = bos, eos
                    arr[1:-1] = ids
                    chunks.append(arr)
                    lengths[s + j] = arr.size
                bar.update(len(batch))
    finally:
        if backend is not None and prev is not None:
            backend.encode_special_tokens = prev
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=dtype)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return tokens, offsets


def write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def write_splits(out: Path, tok, ids: list[str], texts: list[str], indices: dict[str, np.ndarray],
                 dtype) -> tuple[dict, dict]:
    """Token and offset files of each split and val_docs.jsonl; return (splits, {file: sha256})."""
    files: dict[str, str] = {}
    splits: dict[str, dict] = {}
    for split in SPLITS:
        stexts = [texts[i] for i in indices[split]]
        tokens, offsets = encode(tok, stexts, tok.bos_token_id, tok.eos_token_id, dtype, desc=f"encode {split}")
        write_npy(out / f"tokens_{split}.npy", tokens)
        write_npy(out / f"docs_{split}.npy", offsets)
        splits[split] = {
            "n_documents": len(stexts),
            "n_tokens": int(tokens.size),
            "n_bytes": int(sum(len(t.encode("utf-8")) for t in stexts)),
            "dtype": np.dtype(dtype).name,
            "tokens_file": f"tokens_{split}.npy",
            "offsets_file": f"docs_{split}.npy",
        }
        for name in (f"tokens_{split}.npy", f"docs_{split}.npy"):
            files[name] = sha256_file(out / name)
    val_jsonl = "".join(json.dumps({"id": ids[i], "text": texts[i]}, ensure_ascii=False) + "\n" for i in indices["val"])
    write_bytes_atomic(out / "val_docs.jsonl", val_jsonl.encode("utf-8"))
    files["val_docs.jsonl"] = sha256_file(out / "val_docs.jsonl")
    splits["val"]["docs_jsonl"] = "val_docs.jsonl"
    return splits, files
