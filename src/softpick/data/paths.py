"""Where the data stage finds its input files, and how it names them in the manifest and the Snakefile."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # softpick/
_TREE = PACKAGE_DIR.parents[1]
REPO_ROOT = _TREE if (_TREE / "pyproject.toml").is_file() else None  # the source tree (an installed copy has none)


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


PACKAGED = {"data/corpus": PACKAGE_DIR / "_resources" / "corpus"}  # shipped with the package (pyproject)


def _packaged(path: Path) -> Path | None:
    """The package's copy of a relative path under a shipped folder (data/corpus/...), if any."""
    for folder, copy in PACKAGED.items():
        parts = Path(folder).parts
        if path.parts[: len(parts)] == parts:
            return copy.joinpath(*path.parts[len(parts):])
    return None


def resolve_path(p: str | os.PathLike) -> Path:
    """An input path as given when absolute or present in the working directory, else under the repository
    root, else the package's copy (the embedded corpus of a non-editable install); the path as given when
    none has it (the caller names it as missing)."""
    path = Path(p).expanduser()
    if path.is_absolute() or path.exists():
        return path
    for alt in (REPO_ROOT and REPO_ROOT / path, _packaged(path)):
        if alt is not None and alt.exists():
            return alt
    return path


def shown_path(path: Path) -> str:
    """A corpus path as the manifest and the data rule show it: relative to the working directory or the
    repository when under one (the same string on every machine), the configured path for the package's
    copy, else absolute."""
    if not path.is_absolute():
        return path.as_posix()
    for folder, copy in PACKAGED.items():
        if copy in path.parents:
            return (Path(folder) / path.relative_to(copy)).as_posix()
    for base in (Path.cwd(), REPO_ROOT):
        if base is not None and base in path.parents:
            return path.relative_to(base).as_posix()
    return path.as_posix()
