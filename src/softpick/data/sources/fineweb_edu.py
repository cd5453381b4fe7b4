"""``data.source: fineweb_edu``: the paper's data, FineWeb-Edu ``sample-100BT`` streamed from the Hugging Face
hub (``HuggingFaceFW/fineweb-edu``). With ``data.path`` the same code reads local files of the FineWeb-Edu
schema (``text``, ``id``, ``url``, ...) through ``datasets``' parquet / json builders: a file, a glob, a
directory (every ``*.parquet`` below it) or a list of them. Without ``data.path`` the hub must be
reachable; otherwise a DataSourceUnavailableError naming the dataset is raised at once."""
from __future__ import annotations

from ..hub import open_hub_dataset
from . import Source
from .files import input_files, load_local_dataset, local_files

DATASET = "HuggingFaceFW/fineweb-edu"
CONFIG = "sample-100BT"


def _check(cfg: dict) -> None:
    if cfg["path"]:
        local_files(cfg["path"])  # FileNotFoundError / ValueError naming data.path


def _documents(cfg: dict, stats: dict):
    if cfg.get("path"):
        ds = load_local_dataset(cfg["path"], streaming=True)
    else:
        resource = f"FineWeb-Edu dataset '{DATASET}' (config '{CONFIG}')"
        ds = open_hub_dataset(resource, DATASET, name=CONFIG, split="train", streaming=True)
    for i, ex in enumerate(ds):
        text = ex.get("text")
        if not isinstance(text, str):
            raise ValueError(f"FineWeb-Edu record {i} has no string 'text' field (keys: {sorted(ex)})")
        yield str(ex.get("id") if ex.get("id") is not None else i), text


SOURCE = Source(
    name="fineweb_edu",
    summary=f"{DATASET} {CONFIG} (hub), or local files of that schema",
    keys=("path",),
    files=lambda cfg: input_files(cfg.get("path")),
    documents=_documents,
    check=_check,
    dataset=lambda cfg: None if cfg.get("path") else f"{DATASET}/{CONFIG}",
)
