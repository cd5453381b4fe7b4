"""Where the data stage finds its input files, and how it names them in the manifest and the Snakefile."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # softpick/
REPO_ROOT = PACKAGE_DIR.parents[1]  # the source tree (a non-editable install has none)


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def resolve_path(p: str | os.PathLike) -> Path:
    """An input path as given when absolute or present in the working directory, else under the repository
    root; the path as given when neither has it (the caller names it as missing)."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path
    alt = REPO_ROOT / path
    return alt if alt.exists() else path


def shown_path(path: Path) -> str:
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
