"""The analysis files: the JSON summary (non-finite numbers as null) and the NPZ arrays, both written
atomically (softpick.atomic: whole or not at all)."""
from __future__ import annotations

import math

import numpy as np

from ..atomic import atomic_path
from ..atomic import write_json_atomic as _write_json_atomic


def json_clean(o):
    """JSON-able copy: string keys, numpy scalars / arrays as Python numbers / lists, NaN / inf as None."""
    if isinstance(o, dict):
        return {str(k): json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_clean(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.ndarray):
        return json_clean(o.tolist())
    return o


def write_json_atomic(path, obj) -> None:
    _write_json_atomic(path, json_clean(obj))


def write_npz_atomic(path, arrays: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
