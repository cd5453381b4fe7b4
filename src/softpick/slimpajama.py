"""The authors' measurement data as a data source: ``data.source: slimpajama_val``.

Their analysis reads ``Phando/SlimPajama-val-sampled`` (split ``validation``) and takes the first 1000
documents in dataset order, skipping empty texts; each is tokenized with the model's tokenizer (BOS
first) and truncated, never packed. Here the validation split is the first ``data.val_documents``
non-empty documents in dataset order (no shuffling), and the training split (GPTQ calibration, the
mechanism stage) the documents after them, up to ``data.max_documents`` in all. Written in the layout
of softpick.data (tokens_{split}.npy framed [BOS] ids [EOS], docs_{split}.npy offsets, val_docs.jsonl,
tokenizer/, manifest.json), so verify_data_dir and every stage read it unchanged; the analysis option
``analysis.keep_eos: false`` drops the closing EOS as the authors' tokenization has none.

Keys: ``tokenizer`` (kind pretrained: the model's, e.g. fla-hub/transformer-1.3B-100B), ``val_documents``
(required; the authors: 1000), ``max_documents`` (null = all), ``path`` (optional local copy of the
dataset: parquet / json[l] files, a glob or a directory, read with datasets' builders in file order;
without it the Hugging Face Hub must be reachable, else one error naming the dataset at once).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from . import data as _data
from .atomic import sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

SOURCE = "slimpajama_val"
DATASET = "Phando/SlimPajama-val-sampled"
SPLIT = "validation"


def check_config(data_cfg: dict) -> dict:
    """The data section with defaults filled in; ValueError / FileNotFoundError naming the bad key."""
    unknown = sorted(set(data_cfg) - set(_data.DEFAULTS))
    if unknown:
        raise ValueError(f"unknown data config key(s) {unknown}; allowed: {sorted(_data.DEFAULTS)}")
    cfg = {**_data.DEFAULTS, **data_cfg, "tokenizer": {**_data.DEFAULTS["tokenizer"], **(data_cfg.get("tokenizer") or {})}}
    if cfg["source"] != SOURCE:
        raise ValueError(f"data.source must be {SOURCE!r} here, got {cfg['source']!r}")
    if cfg["tokenizer"]["kind"] != "pretrained" or not cfg["tokenizer"].get("name"):
        raise ValueError(f"data.tokenizer: source {SOURCE!r} is tokenized with the model's tokenizer: set "
                         "kind: pretrained and name (e.g. fla-hub/transformer-1.3B-100B)")
    nval, nmax = cfg["val_documents"], cfg["max_documents"]
    if not _data._is_int(nval) or nval < 1:
        raise ValueError(f"data.val_documents: source {SOURCE!r} takes the first val_documents documents as the "
                         f"validation split (the authors: 1000); got {nval!r}")
    if data_cfg.get("val_fraction") is not None:
        raise ValueError("data.val_fraction must be null with data.val_documents")
    if nmax is not None and (not _data._is_int(nmax) or nmax <= nval):
        raise ValueError(f"data.max_documents ({nmax!r}) must be null or larger than data.val_documents ({nval})")
    if cfg["path"]:
        _data._fineweb_local_files(cfg["path"])  # the same file / glob / directory rules; names data.path
    return cfg


def _open_dataset(cfg: dict):
    import datasets

    if cfg["path"]:
        files = _data._fineweb_local_files(cfg["path"])
        builder = "parquet" if _data._file_format(Path(files[0])) == "parquet" else "json"
        return datasets.load_dataset(builder, data_files=files, split="train")
    resource = f"dataset '{DATASET}' (split '{SPLIT}')"
    _data._check_hub_reachable(resource)  # offline / unreachable: one DataSourceUnavailableError, at once
    try:
        return datasets.load_dataset(DATASET, split=SPLIT)
    except Exception as err:  # network errors come in many types
        raise _data.DataSourceUnavailableError(f"could not open {resource} from the Hugging Face hub: {err}") from err


def read_documents(cfg: dict) -> tuple[list[str], list[str], int]:
    """(ids, texts, skipped): the non-empty documents in dataset order, at most max_documents."""
    ds = _open_dataset(cfg)
    if "text" not in ds.column_names:
        raise ValueError(f"{cfg['path'] or DATASET}: no 'text' column (columns: {ds.column_names})")
    limit = cfg["max_documents"]
    ids, texts, skipped = [], [], 0
    for i, ex in enumerate(ds):
        if limit is not None and len(texts) >= limit:
            break
        text = ex["text"]
        if not isinstance(text, str) or not text.strip():
            skipped += 1  # the authors' loop skips empty texts; they do not count towards the 1000
            continue
        ids.append(str(ex["id"]) if ex.get("id") is not None else str(i))
        texts.append(text)
    return ids, texts, skipped


def prepare_slimpajama_val(data_cfg: dict, out_dir, seed: int) -> dict:
    """Write the data directory (see the module docstring); return the manifest."""
    cfg = check_config(data_cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = _data._load_pretrained(cfg["tokenizer"]["name"])  # before the dataset: fail fast without the hub
    t0 = time.perf_counter()
    ids, texts, skipped = read_documents(cfg)
    nval = cfg["val_documents"]
    log.info("read %d documents of %s in %.1fs (%d empty skipped)", len(texts), cfg["path"] or DATASET,
             time.perf_counter() - t0, skipped)
    if len(texts) < nval:
        raise ValueError(f"data.val_documents is {nval} but {cfg['path'] or DATASET} has only {len(texts)} non-empty documents")
    val_idx = np.arange(nval)
    train_idx = np.arange(nval, len(texts))
    train_note = "the documents after the validation split"
    if train_idx.size == 0:  # nothing left: GPTQ calibration and the mechanism stage read the same documents
        log.warning("no documents after the first %d: the train split repeats the validation documents", nval)
        train_idx, train_note = val_idx, "the validation documents again (the dataset has no more)"
    bos, eos = tok.bos_token_id, tok.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {cfg['tokenizer']['name']!r} has no BOS/EOS token (bos={bos}, eos={eos})")
    vocab = len(tok)
    dtype = np.uint16 if vocab <= 65535 else np.uint32
    _data._atomic_tokenizer_dir(out / "tokenizer", tok)
    files = {f"tokenizer/{f.name}": sha256_file(f) for f in sorted((out / "tokenizer").iterdir())}
    splits: dict[str, dict] = {}
    for split, idx in (("train", train_idx), ("val", val_idx)):
        stexts = [texts[i] for i in idx]
        tokens, offsets = _data._encode(tok, stexts, bos, eos, dtype, desc=f"encode {split}")
        _data._atomic_npy(out / f"tokens_{split}.npy", tokens)
        _data._atomic_npy(out / f"docs_{split}.npy", offsets)
        splits[split] = {"n_documents": len(stexts), "n_tokens": int(tokens.size),
                         "n_bytes": int(sum(len(t.encode("utf-8")) for t in stexts)), "dtype": np.dtype(dtype).name,
                         "tokens_file": f"tokens_{split}.npy", "offsets_file": f"docs_{split}.npy"}
        files.update({n: sha256_file(out / n) for n in (f"tokens_{split}.npy", f"docs_{split}.npy")})
    splits["train"]["documents"] = train_note
    splits["val"]["documents"] = f"the first {nval} non-empty documents in dataset order"
    val_jsonl = "".join(json.dumps({"id": ids[i], "text": texts[i]}, ensure_ascii=False) + "\n" for i in val_idx)
    write_bytes_atomic(out / "val_docs.jsonl", val_jsonl.encode("utf-8"))
    files["val_docs.jsonl"] = sha256_file(out / "val_docs.jsonl")
    splits["val"]["docs_jsonl"] = "val_docs.jsonl"
    manifest = {
        "format_version": _data.MANIFEST_VERSION, "source": SOURCE,
        "dataset": None if cfg["path"] else f"{DATASET}/{SPLIT}", "seed": int(seed),
        "n_documents": len(texts), "skipped_empty_documents": skipped, "splits": splits,
        "tokenizer": {"kind": "pretrained", "name": cfg["tokenizer"]["name"], "vocab_size": int(vocab),
                      "bos_token_id": int(bos), "eos_token_id": int(eos),
                      "pad_token_id": None if tok.pad_token_id is None else int(tok.pad_token_id),
                      "unk_token_id": None if tok.unk_token_id is None else int(tok.unk_token_id), "dir": "tokenizer"},
        "files": files, "sizes": {name: (out / name).stat().st_size for name in files}, "config": _data._jsonable(cfg),
    }
    write_bytes_atomic(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


__all__ = ["SOURCE", "DATASET", "SPLIT", "check_config", "read_documents", "prepare_slimpajama_val"]
