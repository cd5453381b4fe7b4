"""Where an fla checkpoint comes from: a local directory or a Hugging Face Hub id (owner/name[@revision]).

parse_source tells the two apart; check_hub fails fast (ImportSourceError naming the config key) when a
Hub checkpoint is needed and the Hub is off or unreachable, unless the local cache already holds it;
fetch_checkpoint returns the local directory, downloading only config.json, the weights and the
tokenizer files.
"""
from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .data import DataSourceUnavailableError
from .data.hub import hub_endpoint
from .fla_config import CheckpointFormatError
from .fla_weights import weight_files

log = logging.getLogger("softpick.importer")  # one logger for the whole import

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ImportSourceError(DataSourceUnavailableError):
    """The checkpoint cannot be fetched (Hub offline, unreachable, or no such repository)."""


def parse_source(src: str, key: str = "source") -> tuple[str, str | None, Path | None]:
    """(Hub id, revision, None) or (src, None, local directory). Raises ValueError / FileNotFoundError naming `key`."""
    if not isinstance(src, str) or not src.strip():
        raise ValueError(f"{key}: expected a Hub id (owner/name[@revision]) or a local directory, got {src!r}")
    path = Path(src).expanduser()
    if path.is_dir():
        return src, None, path
    if path.exists():
        raise ValueError(f"{key}: {src} is a file; give the directory holding config.json and the weights")
    repo, at, revision = src.partition("@")
    if HUB_ID.match(repo) and not src.startswith((".", "/", "~")) and (not at or revision):
        return repo, revision or None, None
    raise FileNotFoundError(f"{key}: {src} is neither an existing directory nor a Hub id (owner/name[@revision])")


def _offline_var() -> str | None:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def _cached_snapshot(repo: str, revision: str | None) -> Path | None:
    """The checkpoint from the local Hugging Face cache (no network), when it holds config.json and weights."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo, revision=revision, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError and relatives)
        return None
    return path if (path / "config.json").is_file() and weight_files(path, required=False) else None


def _unavailable(repo: str, key: str, why: str) -> ImportSourceError:
    return ImportSourceError(
        f"{key}: '{repo}' is not a local directory, and the Hugging Face Hub checkpoint of that name cannot be fetched: {why}. On a machine with Hub access run "
        f"`hf download {repo} --local-dir DIR`, copy DIR here and point the config at it ({key}: DIR, or "
        f"--set {key}=DIR with python -m softpick).")


def check_hub(repo: str, revision: str | None = None, key: str = "source", timeout: float = 5.0) -> Path | None:
    """Fail fast when `repo` is needed from the Hub and the Hub is off or unreachable; returns the cached
    snapshot when the local cache already holds it (then no network is needed)."""
    cached = _cached_snapshot(repo, revision)
    if cached is not None:
        return cached
    var = _offline_var()
    if var:
        raise _unavailable(repo, key, f"{var}=1 (offline mode) and it is not in the local cache")
    endpoint = hub_endpoint()
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        raise _unavailable(repo, key, f"{endpoint} is unreachable ({host}:{port}: {err})") from None
    return None


def fetch_checkpoint(src: str, key: str = "source") -> tuple[Path, str | None]:
    """The local directory of checkpoint `src` (downloaded from the Hub when needed) and its revision."""
    repo, revision, local = parse_source(src, key)
    if local is not None:
        return local, None
    cached = check_hub(repo, revision, key)
    if cached is not None:
        log.info("%s: %s from the local Hugging Face cache (%s)", key, repo, cached)
        return cached, revision
    from huggingface_hub import HfApi, snapshot_download

    try:
        files = HfApi().list_repo_files(repo, revision=revision)
    except Exception as err:  # RepositoryNotFoundError, GatedRepoError, HTTP errors
        raise _unavailable(repo, key, f"{type(err).__name__}: {err}") from None
    weights = [f for f in files if f.endswith(".safetensors") or f == "model.safetensors.index.json"]
    if not weights:
        weights = [f for f in files if re.fullmatch(r"pytorch_model.*\.bin(\.index\.json)?", f)]
    if "config.json" not in files or not weights:
        raise CheckpointFormatError(f"{key}: Hub repository {repo} has no config.json and model weights "
                                    f"(files: {', '.join(sorted(files)[:20])})")
    wanted = ["config.json", *weights, *(f for f in files if f in TOKENIZER_FILES)]
    log.info("%s: downloading %s (%s)", key, repo, ", ".join(wanted))
    try:
        path = snapshot_download(repo, revision=revision, allow_patterns=wanted)
    except Exception as err:
        raise _unavailable(repo, key, f"download failed: {type(err).__name__}: {err}") from None
    return Path(path), revision
