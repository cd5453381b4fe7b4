"""The data stage: documents -> tokenizer -> train / val token files, with a manifest.

:func:`prepare_data` (``python -m softpick data``; the Snakefile's data rule) validates the data section
(softpick.data.settings), reads the configured source's documents (softpick.data.sources), splits them
(by default a seeded document-level permutation; a source may replace it), builds or loads the tokenizer,
and writes into ``out_dir`` (all files atomically: temp name + ``os.replace``):

``tokenizer/``            ``PreTrainedTokenizerFast.save_pretrained`` output (adds BOS like Llama).
``tokens_{split}.npy``    / ``docs_{split}.npy`` / ``val_docs.jsonl``: softpick.data.packing.
``manifest.json``         softpick.data.manifest.

``split`` is ``"train"`` or ``"val"``. Output is deterministic: same config + seed -> same bytes.
"""
from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from ..atomic import sha256_file
from .manifest import MANIFEST_VERSION, input_records, jsonable, tokenizer_entry, write_manifest
from .packing import write_splits
from .paths import is_int
from .settings import normalize_data_config
from .sources import corpus_files, get_source
from .tokenizer import load_pretrained, train_bpe_tokenizer, train_sample, write_tokenizer_dir

log = logging.getLogger(__name__)


def _records(cfg: dict, stats: dict) -> Iterator[tuple[str, str]]:
    """(id, text) of the configured source, at most max_documents."""
    return itertools.islice(get_source(cfg["source"]).documents(cfg, stats), cfg.get("max_documents"))


def load_documents(data_cfg: dict) -> Iterator[str]:
    """Iterate over the document texts of the configured source (validated first)."""
    cfg = normalize_data_config(data_cfg)
    for _id, text in _records(cfg, {}):
        yield text


def prepare_data(data_cfg: dict, out_dir: str | Path, seed: int) -> dict:
    """Load documents, split them, build the tokenizer, write token files; return the manifest.

    All config errors (``ValueError`` / ``FileNotFoundError``) are raised before any work; so is a
    DataSourceUnavailableError for a pretrained tokenizer the hub would have to provide.
    """
    if not is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    cfg = normalize_data_config(data_cfg)
    source = get_source(cfg["source"])
    tcfg = cfg["tokenizer"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = None
    if tcfg["kind"] == "pretrained":  # fail before reading data if the tokenizer is unavailable
        tok = load_pretrained(tcfg["name"])

    # the input files, hashed before they are read: an edit while the stage runs shows at the next check
    corpus = input_records(corpus_files(cfg))
    t0 = time.perf_counter()
    ids: list[str] = []
    texts: list[str] = []
    stats: dict = {}
    for did, text in _records(cfg, stats):
        ids.append(did)
        texts.append(text)
    log.info("loaded %d documents from %s in %.1fs%s", len(texts), cfg["source"], time.perf_counter() - t0,
             "".join(f" ({v} {k.replace('_', ' ')})" for k, v in stats.items()))
    train_idx, val_idx, notes = source.split(cfg, len(texts), seed)

    if tok is None:
        t0 = time.perf_counter()
        sample = train_sample([texts[i] for i in train_idx], seed, tcfg["train_sample_bytes"])
        tok = train_bpe_tokenizer(sample, tcfg["vocab_size"])
        log.info("trained byte-level BPE (vocab %d) on %d docs / %d bytes in %.1fs", len(tok), len(sample),
                 sum(len(s.encode("utf-8")) for s in sample), time.perf_counter() - t0)
    if tok.bos_token_id is None or tok.eos_token_id is None:
        raise ValueError(f"tokenizer {tcfg.get('name')!r} has no BOS/EOS token "
                         f"(bos={tok.bos_token_id}, eos={tok.eos_token_id})")
    dtype = np.uint16 if len(tok) <= 65535 else np.uint32
    write_tokenizer_dir(out / "tokenizer", tok)

    files = {f"tokenizer/{f.name}": sha256_file(f) for f in sorted((out / "tokenizer").iterdir())}
    splits, split_files = write_splits(out, tok, ids, texts, {"train": train_idx, "val": val_idx}, dtype)
    files.update(split_files)
    for split, note in notes.items():
        splits[split]["documents"] = note

    manifest = {
        "format_version": MANIFEST_VERSION,
        "source": cfg["source"],
        "dataset": source.dataset(cfg),
        "seed": int(seed),
        "n_documents": len(texts),
        **stats,
        "splits": splits,
        "tokenizer": tokenizer_entry(tok, tcfg["kind"], tcfg["name"] if tcfg["kind"] == "pretrained" else None),
        "files": files,
        "corpus": corpus,
        "config": jsonable(cfg),
    }
    return write_manifest(out, manifest)
