"""Data stage: documents -> tokenizer -> train/val token files.

Entry point: :func:`prepare_data(data_cfg, out_dir, seed) <prepare_data>`; readers for training:
:func:`load_tokens` and :class:`TokenDataset`.

Data config (the ``data`` section of the pipeline config, received as a plain dict; JSON schema in
``workflow/schemas/data.schema.json``). Unknown keys are rejected.

``source`` (``"embedded"``)
    ``embedded``: the committed public-domain corpus (``corpus_path``).
    ``jsonl``: a local JSON-lines file (``.jsonl``/``.json``, optionally ``.gz``/``.xz``) or a
    ``.parquet`` file with a ``"text"`` field (``"id"`` used when present), given by ``path``.
    ``fineweb_edu``: the paper's data, FineWeb-Edu ``sample-100BT`` streamed from the Hugging Face
    hub (``HuggingFaceFW/fineweb-edu``). When ``path`` is set, the same code runs on local files of
    the FineWeb-Edu schema (``text``, ``id``, ``url``, ...) through ``datasets``' parquet/json
    builders: a file, a glob, or a directory (all ``*.parquet`` below it). Without ``path`` the hub
    must be reachable; otherwise a :class:`DataSourceUnavailableError` naming the dataset is raised
    at once.
``corpus_path`` (``"data/corpus/corpus.jsonl.xz"``)
    The embedded corpus (``{"id","source","title","text"}`` per line, xz-compressed). Relative
    paths are tried against the working directory, then the repository root.
``path`` (none)
    Input file(s) for ``jsonl`` (required) and ``fineweb_edu`` (optional, local files).
``max_documents`` (none = all)
    Use only the first N documents of the source (in source order).
``val_fraction`` (``0.05``) / ``val_documents`` (none)
    Size of the validation split, as a fraction of documents or as an exact count (not both).
    Documents are assigned whole, by a permutation seeded with ``seed``; each split keeps source order.
``tokenizer``
    ``kind`` (``"bpe"``): ``bpe`` trains a byte-level BPE (``tokenizers``) on the *train* split;
    special tokens ``<unk>`` = 0, ``<s>`` (BOS) = 1, ``</s>`` (EOS) = 2, ``<pad>`` = 3, as in
    Llama-2. ``pretrained`` loads ``AutoTokenizer.from_pretrained(name)`` (the paper: a Llama-2
    tokenizer, vocab 32000, e.g. ``meta-llama/Llama-2-7b-hf``).
    ``vocab_size`` (``8192``): BPE vocabulary size (bpe only; 260..1_000_000).
    ``name``: hub id or local directory (pretrained only; required there).
    ``train_sample_bytes`` (``8_000_000``; 0 = whole train split): BPE training uses a seeded
    subsample of train documents of about this many UTF-8 bytes.

Output directory (all files written atomically: temp name + ``os.replace``):

``tokenizer/``            ``PreTrainedTokenizerFast.save_pretrained`` output (adds BOS like Llama).
``tokens_{split}.npy``    1-D uint16 (vocab <= 65535) or uint32; each document is
                          ``[BOS] + ids + [EOS]``, documents concatenated.
``docs_{split}.npy``      int64 offsets, length ``n_docs + 1``; doc i = ``tokens[off[i]:off[i+1]]``.
``val_docs.jsonl``        raw text of the validation documents, ``{"id","text"}`` per line.
``manifest.json``         counts, dtypes, sha256 and size of every file, tokenizer, source, seed, config,
                          and ``corpus``: path, size and sha256 of every local input file the source read
                          (:func:`corpus_files`; none for the hub).

``split`` is ``"train"`` or ``"val"``. Output is deterministic: same config + seed -> same bytes.

Every reader checks the directory against its manifest first: :func:`verify_data_dir` (called by
:func:`load_tokens` and by ``softpick.cli.run_stage`` for each stage that reads data) compares size
and sha256 of each file the reader uses, loads the tokenizer, and checks that every token id is below
its vocabulary size; a :class:`DataIntegrityError` names each bad file and what is wrong with it. It also
checks the corpus files the manifest lists, where they exist on this machine: an edited corpus means stale
token files (size always; sha256 up to CORPUS_HASH_LIMIT bytes per file, larger ones by size only).
"""
from __future__ import annotations

import copy
import glob as _glob
import gzip
import json
import logging
import lzma
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import numpy as np

from .atomic import atomic_path, default_mode, sha256_file, write_bytes_atomic

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULTS",
    "DataIntegrityError",
    "DataSourceUnavailableError",
    "FINEWEB_EDU_DATASET",
    "FINEWEB_EDU_CONFIG",
    "SPLITS",
    "TokenDataset",
    "load_documents",
    "load_tokenizer",
    "load_tokens",
    "normalize_data_config",
    "corpus_files",
    "prepare_data",
    "split_documents",
    "train_bpe_tokenizer",
    "verify_data_dir",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
FINEWEB_EDU_DATASET = "HuggingFaceFW/fineweb-edu"
FINEWEB_EDU_CONFIG = "sample-100BT"
SPLITS = ("train", "val")
SOURCES = ("embedded", "jsonl", "fineweb_edu")
TOKENIZER_KINDS = ("bpe", "pretrained")
SPECIAL_TOKENS = {"unk": "<unk>", "bos": "<s>", "eos": "</s>", "pad": "<pad>"}  # ids 0, 1, 2, 3
MANIFEST_VERSION = 1
CORPUS_HASH_LIMIT = 1 << 30  # verify_data_dir re-hashes corpus files up to this size (every stage job)

DEFAULTS: dict[str, Any] = {
    "source": "embedded",
    "corpus_path": "data/corpus/corpus.jsonl.xz",
    "path": None,
    "max_documents": None,
    "val_fraction": 0.05,
    "val_documents": None,
    "tokenizer": {
        "kind": "bpe",
        "vocab_size": 8192,
        "name": None,
        "train_sample_bytes": 8_000_000,
    },
}


class DataSourceUnavailableError(RuntimeError):
    """A remote resource (Hugging Face hub dataset or tokenizer) cannot be reached."""


class DataIntegrityError(ValueError):
    """A prepared data directory does not match its manifest (missing, changed, truncated or unusable
    file); the message names every bad file and what is wrong."""


# ---------------------------------------------------------------------------
# config validation


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _resolve_path(p: str | os.PathLike, key: str) -> Path:
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


def normalize_data_config(data_cfg: dict | None) -> dict:
    """Merge ``data_cfg`` over :data:`DEFAULTS` and validate it.

    Raises ``ValueError`` naming the offending key/value, ``FileNotFoundError`` naming a missing
    input file. Returns a new dict (defaults filled in; input paths left as given).
    """
    if data_cfg is None:
        data_cfg = {}
    if not isinstance(data_cfg, dict):
        raise ValueError(f"data config must be a dict, got {type(data_cfg).__name__}")
    unknown = sorted(set(data_cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown data config key(s) {unknown}; allowed: {sorted(DEFAULTS)}")
    cfg = copy.deepcopy(DEFAULTS)
    for k, v in data_cfg.items():
        if k != "tokenizer":
            cfg[k] = v
    tok_in = data_cfg.get("tokenizer", {}) or {}
    if not isinstance(tok_in, dict):
        raise ValueError(f"data.tokenizer must be a dict, got {type(tok_in).__name__}")
    unknown = sorted(set(tok_in) - set(DEFAULTS["tokenizer"]))
    if unknown:
        raise ValueError(f"unknown data.tokenizer key(s) {unknown}; allowed: {sorted(DEFAULTS['tokenizer'])}")
    cfg["tokenizer"].update(tok_in)

    if cfg["source"] not in SOURCES:
        raise ValueError(f"data.source must be one of {list(SOURCES)}, got {cfg['source']!r}")
    md = cfg["max_documents"]
    if md is not None and (not _is_int(md) or md < 2):
        raise ValueError(f"data.max_documents must be an integer >= 2 or null, got {md!r}")
    vf, vd = cfg["val_fraction"], cfg["val_documents"]
    if vd is not None:
        if "val_fraction" in data_cfg and data_cfg["val_fraction"] is not None:
            raise ValueError("set only one of data.val_fraction and data.val_documents "
                             "(set data.val_fraction: null when using data.val_documents)")
        if not _is_int(vd) or vd < 1:
            raise ValueError(f"data.val_documents must be an integer >= 1, got {vd!r}")
        cfg["val_fraction"] = None
    else:
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not (0.0 < float(vf) < 1.0):
            raise ValueError(f"data.val_fraction must be a number in (0, 1), got {vf!r}")
        cfg["val_fraction"] = float(vf)

    src = cfg["source"]
    if src == "embedded":
        if not isinstance(cfg["corpus_path"], (str, os.PathLike)) or not str(cfg["corpus_path"]):
            raise ValueError(f"data.corpus_path must be a path, got {cfg['corpus_path']!r}")
        p = _resolve_path(cfg["corpus_path"], "corpus_path")
        if not p.is_file():
            raise FileNotFoundError(f"data.corpus_path: embedded corpus not found: {cfg['corpus_path']} "
                                    f"(rebuild it with scripts/build_corpus.py)")
    elif src == "jsonl":
        if not cfg["path"]:
            raise ValueError("data.path is required when data.source is 'jsonl'")
        if not isinstance(cfg["path"], (str, os.PathLike)):
            raise ValueError(f"data.path must be a single file path for source 'jsonl', got {cfg['path']!r}")
        p = _resolve_path(cfg["path"], "path")
        if not p.is_file():
            raise FileNotFoundError(f"data.path: file not found: {cfg['path']}")
        if _file_format(p) is None:
            raise ValueError(f"data.path: unsupported file type {p.name!r} "
                             f"(expected .jsonl/.json[.gz|.xz] or .parquet)")
    elif src == "fineweb_edu" and cfg["path"]:
        _fineweb_local_files(cfg["path"])  # raises FileNotFoundError / ValueError

    tok = cfg["tokenizer"]
    if tok["kind"] not in TOKENIZER_KINDS:
        raise ValueError(f"data.tokenizer.kind must be one of {list(TOKENIZER_KINDS)}, got {tok['kind']!r}")
    if tok["kind"] == "bpe":
        vs = tok["vocab_size"]
        if not _is_int(vs) or not (260 <= vs <= 1_000_000):
            raise ValueError(f"data.tokenizer.vocab_size must be an integer in [260, 1000000], got {vs!r}")
    else:
        if not tok["name"] or not isinstance(tok["name"], str):
            raise ValueError("data.tokenizer.name (hub id or local directory) is required when "
                             "data.tokenizer.kind is 'pretrained'")
    tsb = tok["train_sample_bytes"]
    if tsb is not None and (not _is_int(tsb) or tsb < 0):
        raise ValueError(f"data.tokenizer.train_sample_bytes must be an integer >= 0 or null, got {tsb!r}")
    return cfg


# ---------------------------------------------------------------------------
# document sources


def _file_format(p: Path) -> str | None:
    name = p.name.lower()
    if name.endswith(".parquet"):
        return "parquet"
    for ext in (".jsonl", ".json", ".ndjson"):
        for comp in ("", ".gz", ".xz"):
            if name.endswith(ext + comp):
                return "json"
    return None


def _open_text(p: Path):
    name = p.name.lower()
    if name.endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8")
    if name.endswith(".xz"):
        return lzma.open(p, "rt", encoding="utf-8")
    return open(p, "r", encoding="utf-8")


def _iter_jsonl(p: Path) -> Iterator[tuple[str, str]]:
    with _open_text(p) as f:
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


def _iter_parquet(p: Path) -> Iterator[tuple[str, str]]:
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


def _fineweb_local_files(path: str | os.PathLike | list) -> list[str]:
    paths = path if isinstance(path, (list, tuple)) else [path]
    files: list[str] = []
    for p in paths:
        s = str(p)
        rp = _resolve_path(s, "path")
        if rp.is_dir():
            found = sorted(str(f) for f in rp.rglob("*.parquet"))
            if not found:
                found = sorted(str(f) for f in rp.rglob("*") if f.is_file() and _file_format(f) == "json")
            if not found:
                raise FileNotFoundError(f"data.path: no .parquet/.jsonl files under directory {s}")
            files += found
        elif any(c in s for c in "*?["):
            found = sorted(_glob.glob(s, recursive=True))
            if not found:
                raise FileNotFoundError(f"data.path: glob matched no files: {s}")
            files += found
        elif rp.is_file():
            files.append(str(rp))
        else:
            raise FileNotFoundError(f"data.path: file not found: {s}")
    fmts = {_file_format(Path(f)) for f in files}
    if None in fmts or len(fmts) != 1:
        raise ValueError(f"data.path: files must all be .parquet or all .jsonl/.json, got {files[:5]}")
    return files


def _shown_path(path: Path) -> str:
    """A corpus path as the manifest and the data rule show it: relative to the working directory or the
    repository when under one (the same string on every machine), else absolute."""
    if not path.is_absolute():
        return path.as_posix()
    for base in (Path.cwd(), REPO_ROOT):
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return path.as_posix()


def corpus_files(data_cfg: dict | None) -> list[str]:
    """The local files the configured source reads (the embedded corpus, the jsonl / parquet file, the
    FineWeb-Edu files under data.path; none for the hub), as paths relative to the working directory or the
    repository when under one. A missing file is listed as configured (the Snakefile makes these the
    data rule's inputs: Snakemake names a missing one, or builds data/corpus-large); no other checks."""
    cfg = {**DEFAULTS, **(data_cfg or {})}
    source = cfg.get("source", "embedded")
    if source == "embedded":
        paths = [cfg.get("corpus_path")]
    elif source == "jsonl":
        paths = [cfg.get("path")]
    elif source == "fineweb_edu" and cfg.get("path"):
        try:
            paths = _fineweb_local_files(cfg["path"])
        except (FileNotFoundError, ValueError):
            paths = list(cfg["path"]) if isinstance(cfg["path"], (list, tuple)) else [cfg["path"]]
    else:
        paths = []
    out = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or not str(p) or any(c in str(p) for c in "*?["):
            continue  # a bad value (validation names it) or a glob that matched nothing
        resolved = _resolve_path(p, "path")
        out.append(_shown_path(resolved) if resolved.exists() else str(p))
    return sorted(set(out), key=out.index)


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def _offline_env() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _check_hub_reachable(resource: str, timeout: float = 5.0) -> None:
    """Fail fast (no retries) when the Hugging Face hub is off or unreachable."""
    var = _offline_env()
    if var:
        raise DataSourceUnavailableError(
            f"{resource} needs the Hugging Face hub, but {var}=1 (offline mode). Unset it on a machine "
            f"with network access, or use local files (data.path) / a local tokenizer directory.")
    url = urlparse(_hub_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise DataSourceUnavailableError(
            f"{resource}: Hugging Face hub unreachable ({host}:{port}: {e}). Run on a machine with access "
            f"to {_hub_endpoint()} (or set HF_ENDPOINT to a mirror), or download the files and point "
            f"data.path / data.tokenizer.name at the local copy; set HF_HUB_OFFLINE=1 to skip network use.") from None


def _iter_fineweb(cfg: dict) -> Iterator[tuple[str, str]]:
    import datasets

    if cfg.get("path"):
        files = _fineweb_local_files(cfg["path"])
        builder = "parquet" if _file_format(Path(files[0])) == "parquet" else "json"
        ds = datasets.load_dataset(builder, data_files=files, split="train", streaming=True)
    else:
        resource = f"FineWeb-Edu dataset '{FINEWEB_EDU_DATASET}' (config '{FINEWEB_EDU_CONFIG}')"
        _check_hub_reachable(resource)
        try:
            ds = datasets.load_dataset(FINEWEB_EDU_DATASET, name=FINEWEB_EDU_CONFIG, split="train", streaming=True)
        except Exception as e:  # network errors come in many types (ConnectionError, HfHubHTTPError, ...)
            raise DataSourceUnavailableError(f"could not open {resource} from the Hugging Face hub: {e}") from e
    for i, ex in enumerate(ds):
        text = ex.get("text")
        if not isinstance(text, str):
            raise ValueError(f"FineWeb-Edu record {i} has no string 'text' field (keys: {sorted(ex)})")
        yield str(ex.get("id") if ex.get("id") is not None else i), text


def _iter_records(cfg: dict) -> Iterator[tuple[str, str]]:
    """Yield ``(id, text)`` for the configured source; honours ``max_documents``."""
    src = cfg["source"]
    if src == "embedded":
        p = _resolve_path(cfg["corpus_path"], "corpus_path")
        it: Iterator[tuple[str, str]] = _iter_jsonl(p)
    elif src == "jsonl":
        p = _resolve_path(cfg["path"], "path")
        it = _iter_parquet(p) if _file_format(p) == "parquet" else _iter_jsonl(p)
    else:
        it = _iter_fineweb(cfg)
    limit = cfg.get("max_documents")
    for n, rec in enumerate(it):
        if limit is not None and n >= limit:
            break
        yield rec


def load_documents(data_cfg: dict) -> Iterator[str]:
    """Iterate over the document texts of the configured source (validated first)."""
    cfg = normalize_data_config(data_cfg)
    for _id, text in _iter_records(cfg):
        yield text


# ---------------------------------------------------------------------------
# split


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


# ---------------------------------------------------------------------------
# tokenizer


def _wrap_fast(tok_obj) -> "PreTrainedTokenizerFast":  # noqa: F821
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok_obj,
        bos_token=SPECIAL_TOKENS["bos"], eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"], pad_token=SPECIAL_TOKENS["pad"],
        model_max_length=1_000_000_000, clean_up_tokenization_spaces=False,
    )


def train_bpe_tokenizer(texts: list[str], vocab_size: int):
    """Train a byte-level BPE on ``texts``; returns a ``PreTrainedTokenizerFast``.

    Special tokens: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3. The post-processor prepends BOS
    (``tokenizer(text)`` gives ``[1, ...]`` like Llama-2); encode with ``add_special_tokens=False``
    to get bare ids. Deterministic for a given ``texts`` list.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token=None, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    specials = [SPECIAL_TOKENS[k] for k in ("unk", "bos", "eos", "pad")]
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size), min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    for i, s in enumerate(specials):
        assert tok.token_to_id(s) == i, (s, tok.token_to_id(s))
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos']} $A", pair=f"{SPECIAL_TOKENS['bos']} $A {SPECIAL_TOKENS['bos']} $B",
        special_tokens=[(SPECIAL_TOKENS["bos"], 1)],
    )
    return _wrap_fast(tok)


def _load_pretrained(name: str):
    from transformers import AutoTokenizer

    if Path(name).expanduser().is_dir():
        return AutoTokenizer.from_pretrained(str(Path(name).expanduser()))
    resource = f"pretrained tokenizer '{name}'"
    try:  # already in the local HF cache? (no network)
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception:
        pass
    _check_hub_reachable(resource)
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:
        raise DataSourceUnavailableError(
            f"could not load {resource} from the Hugging Face hub ({e}); gated models such as "
            f"meta-llama/Llama-2-7b-hf need HF_TOKEN, or use a mirror / local directory") from e


def _train_sample(texts: list[str], seed: int, sample_bytes: int | None) -> list[str]:
    if not sample_bytes:
        return list(texts)
    order = np.random.default_rng(np.random.SeedSequence([int(seed), 0x70C])).permutation(len(texts))
    out, total = [], 0
    for i in order:
        if total >= sample_bytes:
            break
        t = texts[i]
        b = t.encode("utf-8")
        if total + len(b) > sample_bytes:  # take a prefix of a long document rather than all of it
            t = b[: sample_bytes - total].decode("utf-8", errors="ignore")
        out.append(t)
        total += len(t.encode("utf-8"))
    return out


def load_tokenizer(out_dir: str | os.PathLike):
    """Load the tokenizer written by :func:`prepare_data` (``out_dir/tokenizer``)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(Path(out_dir) / "tokenizer"))


# ---------------------------------------------------------------------------
# atomic writers


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, arr, allow_pickle=False)


def _atomic_tokenizer_dir(path: Path, tok) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    os.chmod(tmp, default_mode(directory=True))  # mkdtemp creates 0700
    tok.save_pretrained(str(tmp))
    old = None
    if path.exists():
        old = path.with_name(f".{path.name}.old-{os.getpid()}")
        os.replace(path, old)
    os.replace(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------
# entry point


def _encode(tok, texts: list[str], bos: int, eos: int, dtype, desc: str, batch_size: int = 256):
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


def prepare_data(data_cfg: dict, out_dir: str | os.PathLike, seed: int) -> dict:
    """Load documents, split them, build the tokenizer, write token files; return the manifest.

    All config errors (``ValueError`` / ``FileNotFoundError``) are raised before any work.
    """
    if not _is_int(seed):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    cfg = normalize_data_config(data_cfg)
    tcfg = cfg["tokenizer"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = None
    if tcfg["kind"] == "pretrained":  # fail before reading data if the tokenizer is unavailable
        tok = _load_pretrained(tcfg["name"])

    # the input files, hashed before they are read: an edit while the stage runs shows at the next check
    corpus = [{"path": f, "bytes": _resolve_path(f, "path").stat().st_size, "sha256": sha256_file(_resolve_path(f, "path"))}
              for f in corpus_files(cfg)]
    t0 = time.perf_counter()
    ids: list[str] = []
    texts: list[str] = []
    for did, text in _iter_records(cfg):
        ids.append(did)
        texts.append(text)
    log.info("loaded %d documents from %s in %.1fs", len(texts), cfg["source"], time.perf_counter() - t0)
    if len(texts) < 2:
        raise ValueError(f"data source {cfg['source']!r} yielded {len(texts)} document(s); need at least 2")
    train_idx, val_idx = split_documents(len(texts), seed, cfg["val_fraction"], cfg["val_documents"])

    if tok is None:
        t0 = time.perf_counter()
        sample = _train_sample([texts[i] for i in train_idx], seed, tcfg["train_sample_bytes"])
        tok = train_bpe_tokenizer(sample, tcfg["vocab_size"])
        log.info("trained byte-level BPE (vocab %d) on %d docs / %d bytes in %.1fs", len(tok), len(sample),
                 sum(len(s.encode("utf-8")) for s in sample), time.perf_counter() - t0)
    vocab = len(tok)
    bos, eos = tok.bos_token_id, tok.eos_token_id
    if bos is None or eos is None:
        raise ValueError(f"tokenizer {tcfg.get('name')!r} has no BOS/EOS token (bos={bos}, eos={eos})")
    dtype = np.uint16 if vocab <= 65535 else np.uint32
    _atomic_tokenizer_dir(out / "tokenizer", tok)

    files: dict[str, str] = {}  # sha256 per file; sizes below (what verify_data_dir checks)
    for f in sorted((out / "tokenizer").iterdir()):
        files[f"tokenizer/{f.name}"] = sha256_file(f)
    splits: dict[str, dict] = {}
    for split, idx in (("train", train_idx), ("val", val_idx)):
        stexts = [texts[i] for i in idx]
        tokens, offsets = _encode(tok, stexts, bos, eos, dtype, desc=f"encode {split}")
        _atomic_npy(out / f"tokens_{split}.npy", tokens)
        _atomic_npy(out / f"docs_{split}.npy", offsets)
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
    val_jsonl = "".join(json.dumps({"id": ids[i], "text": texts[i]}, ensure_ascii=False) + "\n" for i in val_idx)
    write_bytes_atomic(out / "val_docs.jsonl", val_jsonl.encode("utf-8"))
    files["val_docs.jsonl"] = sha256_file(out / "val_docs.jsonl")
    splits["val"]["docs_jsonl"] = "val_docs.jsonl"

    manifest = {
        "format_version": MANIFEST_VERSION,
        "source": cfg["source"],
        "dataset": (f"{FINEWEB_EDU_DATASET}/{FINEWEB_EDU_CONFIG}" if cfg["source"] == "fineweb_edu"
                    and not cfg["path"] else None),
        "seed": int(seed),
        "n_documents": len(texts),
        "splits": splits,
        "tokenizer": {
            "kind": tcfg["kind"],
            "name": tcfg["name"] if tcfg["kind"] == "pretrained" else None,
            "vocab_size": int(vocab),
            "bos_token_id": int(bos),
            "eos_token_id": int(eos),
            "pad_token_id": None if tok.pad_token_id is None else int(tok.pad_token_id),
            "unk_token_id": None if tok.unk_token_id is None else int(tok.unk_token_id),
            "dir": "tokenizer",
        },
        "files": files,
        "sizes": {name: (out / name).stat().st_size for name in files},
        "corpus": corpus,
        "config": _jsonable(cfg),
    }
    write_bytes_atomic(out / "manifest.json", (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return manifest


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


# ---------------------------------------------------------------------------
# readers


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
    path = _resolve_path(entry["path"], "path")
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
        problem = _once(("corpus", _stat_key(_resolve_path(entry["path"], "path")), entry["sha256"]),
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
