"""The Hugging Face hub as a data / tokenizer source: fail fast, with one error naming the resource, when it
is off (HF_HUB_OFFLINE and friends) or unreachable."""
from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


class DataSourceUnavailableError(RuntimeError):
    """A remote resource (Hugging Face hub dataset or tokenizer) cannot be reached."""


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co")


def offline_env() -> str | None:
    """The environment variable that switches the hub off, when one does."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return var
    return None


def check_hub_reachable(resource: str, timeout: float = 5.0) -> None:
    """Fail fast (no retries) when the Hugging Face hub is off or unreachable."""
    var = offline_env()
    if var:
        raise DataSourceUnavailableError(
            f"{resource} needs the Hugging Face hub, but {var}=1 (offline mode). Unset it on a machine "
            f"with network access, or use local files (data.path) / a local tokenizer directory.")
    url = urlparse(hub_endpoint())
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise DataSourceUnavailableError(
            f"{resource}: Hugging Face hub unreachable ({host}:{port}: {e}). Run on a machine with access "
            f"to {hub_endpoint()} (or set HF_ENDPOINT to a mirror), or download the files and point "
            f"data.path / data.tokenizer.name at the local copy; set HF_HUB_OFFLINE=1 to skip network use.") from None


def open_hub_dataset(resource: str, *args, **kwargs):
    """datasets.load_dataset(*args, **kwargs) from the hub; DataSourceUnavailableError naming `resource`
    at once when the hub is off or unreachable, or the dataset cannot be opened."""
    import datasets

    check_hub_reachable(resource)
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # network errors come in many types (ConnectionError, HfHubHTTPError, ...)
        raise DataSourceUnavailableError(f"could not open {resource} from the Hugging Face hub: {e}") from e
