"""Training checkpoints: how one is written, which one a run resumes from, and when it may not.

Layout of <ckpt_dir> (default models/<variant>.checkpoints/):

  step_<N:08d>/state.pt          model, optimizer, data position, RNG states, counters (torch.save)
  step_<N:08d>/fingerprint.json  what the training depends on (below)
  step_<N:08d>/COMPLETE          written last: step, time and the sha256 of the two files above

A save goes to .tmp_step_<N>/ and is renamed; a directory without COMPLETE is a save (or a
deletion: the marker goes first) that died midway and is never loaded; the next save removes such
leftovers of earlier steps.

Fingerprint: the sha256 of a canonical JSON of the variant, the seed, the resolved model / data
config, the train config without the operational keys (OPERATIONAL_TRAIN_KEYS, the same ones the
train rule keeps out of its params), the sha256 of the data dir's manifest.json (which records the
sha256 of every token file) and the sha256 of every source file of TRAINING_CODE. The device and the
process count are left out: a killed run may resume on another process count.

Resume (find_resume_state, rank 0): the newest complete checkpoint whose files match their sha256
and whose state.pt loads is taken when its fingerprint matches the run's. A fingerprint that
differs (or a checkpoint written before fingerprints existed) means the weights would mix two
trainings: the run starts fresh and the whole checkpoint dir is moved to
<ckpt_dir>.stale-<first 8 hex digits of its fingerprint>/ (only the latest stale set is kept; older
ones are deleted). A checkpoint that fails its sha256 or does not load is renamed to
corrupt.step_<N>/ with a warning and the next older one is tried; when none loads the run starts
fresh with a warning (training from scratch gives the same weights, only later).
Every decision is printed to stderr (the stage log): "resuming from step N (fingerprint ...)" or
"starting fresh: <why>".
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .atomic import sha256_file

COMPLETE_MARKER = "COMPLETE"
STATE_FILE = "state.pt"
FINGERPRINT_FILE = "fingerprint.json"
CORRUPT_PREFIX = "corrupt."
FINGERPRINT_VERSION = 1
# train keys that change how a run is launched or logged, never the weights (see workflow/rules/train.smk)
OPERATIONAL_TRAIN_KEYS = ("gpus", "nodes", "rdzv_port", "peak_tflops", "tensorboard", "wandb")
PACKAGE_DIR = Path(__file__).resolve().parent
# the code a training runs, relative to the package; attention/ is taken whole (Triton kernels included)
TRAINING_CODE = ("train.py", "checkpoint.py", "data.py", "model.py", "attention")


def say(message: str) -> None:
    """One line of the stage log (stderr, where the progress bar also goes)."""
    print(f"softpick train: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- fingerprint
def training_code_files(root: Path = PACKAGE_DIR) -> list[Path]:
    """The source files TRAINING_CODE names under root (a package dir), sorted."""
    files = []
    for name in TRAINING_CODE:
        path = root / name
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    return files


def fingerprint(config: dict, variant: str, data_dir: str | Path, *, code_root: Path = PACKAGE_DIR) -> dict:
    """{"fingerprint": sha256 hex, "inputs": what it hashes} for one training job."""
    manifest = Path(data_dir) / "manifest.json"
    inputs = {
        "variant": variant,
        "seed": config["seed"],
        "model": config["model"],
        "train": {k: v for k, v in config["train"].items() if k not in OPERATIONAL_TRAIN_KEYS},
        "data": config["data"],
        "data_manifest": sha256_file(manifest) if manifest.exists() else None,
        "code": {f"softpick/{p.relative_to(code_root).as_posix()}": sha256_file(p) for p in training_code_files(code_root)},
    }
    inputs = json.loads(_canonical(inputs))  # tuples -> lists: what fingerprint.json reads back
    return {"version": FINGERPRINT_VERSION, "fingerprint": _sha256_text(_canonical(inputs)), "inputs": inputs}


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Where two fingerprints' inputs differ, readable: 'train.lr (0.01 -> 0.0001)', 'code softpick/model.py'."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b, name = old.get(key), new.get(key), f"{prefix}{key}"
        if a == b:
            continue
        if prefix == "code.":
            out.append(f"code {key}" + ("" if a and b else " (added)" if b else " (removed)"))
        elif name == "data_manifest":
            out.append("the data manifest (data/manifest.json: other token files)")
        elif isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{name}.")
        else:
            out.append(f"{name} ({json.dumps(a)} -> {json.dumps(b)})")
    return out


# ----------------------------------------------------------------------------- RNG state
def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ----------------------------------------------------------------------------- save / list
def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. A directory without the marker is ignored."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.exists():
        return []
    done = [p for p in ckpt_dir.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(ckpt_dir: Path, step: int, state: dict, keep: int, fingerprint: dict | None = None) -> Path:
    """Write step_<step>/ atomically (temp dir, rename, COMPLETE last); keep the newest `keep`."""
    ckpt_dir = Path(ckpt_dir)
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".tmp_step_{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE_FILE)
    if fingerprint is not None:
        (tmp / FINGERPRINT_FILE).write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")
    _fsync_dir(tmp)
    sums = {f.name: sha256_file(f) for f in sorted(tmp.iterdir())}
    if final.exists():
        _remove_checkpoint(final)
    os.replace(tmp, final)
    (final / COMPLETE_MARKER).write_text(json.dumps({"step": step, "time": time.time(), "sha256": sums}))
    _fsync_dir(final)
    for old in list_checkpoints(ckpt_dir)[:-keep] + _unfinished_before(ckpt_dir, step):
        _remove_checkpoint(old)
    return final


def _unfinished_before(ckpt_dir: Path, step: int) -> list[Path]:
    """Saves or deletions a kill cut short, of steps before `step`: nothing will complete them."""
    out = []
    for p in ckpt_dir.glob("*step_*"):
        name = p.name.removeprefix(".tmp_")
        if (p.name.startswith(".tmp_step_") or (name.startswith("step_") and not (p / COMPLETE_MARKER).exists())) \
                and name.split("_")[1].isdigit() and int(name.split("_")[1]) < step:
            out.append(p)
    return out


def _remove_checkpoint(path: Path) -> None:
    """The marker first: a deletion cut short never leaves a 'complete' checkpoint without its state."""
    (path / COMPLETE_MARKER).unlink(missing_ok=True)
    shutil.rmtree(path, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- resume
class _Stale(Exception):
    """The checkpoint belongs to another training (message: where the fingerprints differ)."""

    def __init__(self, why: str, old_fingerprint: str | None):
        super().__init__(why)
        self.old_fingerprint = old_fingerprint


def _check_files(path: Path) -> dict | None:
    """The recorded fingerprint of a complete checkpoint after checking its files' sha256.

    Returns None for a checkpoint written before fingerprints existed; raises ValueError naming
    the file that is missing or does not match.
    """
    try:
        marker = json.loads((path / COMPLETE_MARKER).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path / COMPLETE_MARKER} is unreadable ({err})") from None
    if not isinstance(marker, dict) or "sha256" not in marker:
        return None
    for name, expected in marker["sha256"].items():
        f = path / name
        if not f.exists():
            raise ValueError(f"{f} is missing")
        if sha256_file(f) != expected:
            raise ValueError(f"{f} does not match the sha256 its COMPLETE marker records (truncated or overwritten)")
    if FINGERPRINT_FILE not in marker["sha256"]:
        return None
    return json.loads((path / FINGERPRINT_FILE).read_text())


def load_state(path: Path, map_location) -> dict:
    # mmap: N ranks of one node page in one file instead of N full copies in memory
    return torch.load(Path(path) / STATE_FILE, map_location=map_location, weights_only=False, mmap=True)


def _try_checkpoint(path: Path, expected: dict, map_location) -> dict:
    """The loaded state of `path`; raises _Stale (another training) or ValueError (corrupt)."""
    recorded = _check_files(path)
    if recorded is None:
        raise _Stale("the checkpoints have no fingerprint (written before checkpoints recorded one)", None)
    if recorded.get("fingerprint") != expected["fingerprint"]:
        diff = differences(recorded.get("inputs", {}), expected["inputs"]) or ["the fingerprint version"]
        shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
        raise _Stale(f"fingerprint differs in {shown}", recorded.get("fingerprint"))
    try:
        return load_state(path, map_location)
    except Exception as err:  # noqa: BLE001 (any failure to unpickle is a corrupt file)
        raise ValueError(f"{path / STATE_FILE} does not load ({type(err).__name__}: {err})") from None


def _move_stale(ckpt_dir: Path, old_fingerprint: str | None) -> Path:
    """Move ckpt_dir aside to <ckpt_dir>.stale-<fp8>/, deleting older stale sets first."""
    for old in ckpt_dir.parent.glob(f"{ckpt_dir.name}.stale-*"):
        shutil.rmtree(old, ignore_errors=True)
    target = ckpt_dir.parent / f"{ckpt_dir.name}.stale-{(old_fingerprint or 'none')[:8]}"
    os.replace(ckpt_dir, target)
    return target


def _quarantine(path: Path) -> Path:
    target = path.parent / f"{CORRUPT_PREFIX}{path.name}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(path, target)
    return target


def find_resume_state(ckpt_dir: Path, expected: dict, map_location) -> tuple[dict | None, Path | None]:
    """(state, checkpoint path) to resume from, or (None, None) to start fresh; says which and why."""
    ckpt_dir = Path(ckpt_dir)
    checkpoints = list_checkpoints(ckpt_dir)
    if not checkpoints:
        say(f"starting fresh (fingerprint {expected['fingerprint'][:12]}): no checkpoint in {ckpt_dir}")
        return None, None
    for path in reversed(checkpoints):
        try:
            state = _try_checkpoint(path, expected, map_location)
        except _Stale as stale:
            moved = _move_stale(ckpt_dir, stale.old_fingerprint)
            say(f"starting fresh (fingerprint {expected['fingerprint'][:12]}): {stale}; "
                f"the old checkpoints were moved to {moved}")
            return None, None
        except ValueError as err:
            moved = _quarantine(path)
            say(f"warning: checkpoint {path} is corrupt: {err}; renamed to {moved.name}, trying an older one")
            continue
        say(f"resuming from step {state['step']} (fingerprint {expected['fingerprint'][:12]}, {path})")
        return state, path
    say(f"warning: starting fresh (fingerprint {expected['fingerprint'][:12]}): no checkpoint in {ckpt_dir} loads")
    return None, None
