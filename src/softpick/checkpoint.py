"""Training checkpoints: how one is written, which one a run resumes from, and when it may not.

Layout of <ckpt_dir> (default models/<variant>.checkpoints/):

  step_<N:08d>/state.pt          model, optimizer, data position, RNG states, counters (torch.save; only
                                 tensors and plain Python values, so it loads with weights_only=True)
  step_<N:08d>/fingerprint.json  what the training depends on (below)
  step_<N:08d>/COMPLETE          written last: step, time and the sha256 of the two files above

A save goes to .tmp_step_<N>/ and is renamed; a directory without COMPLETE is a save (or a
deletion: the marker goes first) that died midway and is never loaded; the next save removes such
leftovers of earlier steps.

Fingerprint: the sha256 of a canonical JSON of the variant, the seed, the resolved model / data
config, the train config without the operational keys (OPERATIONAL_TRAIN_KEYS: how the job is
launched, logged and checkpointed, never the weights; the train rule keeps the same keys out of its
params), the sha256 of the data dir's manifest.json (which records the sha256 of every token file and
of the corpus) and the sha256 of every source file of the train stage (training_code_files). The device and the process count
are left out: a killed run may resume on another process count.

Resume (find_resume_state, rank 0): the newest complete checkpoint whose files match their sha256
and whose state.pt loads is taken when its fingerprint matches the run's. A fingerprint that
differs (or a checkpoint written before fingerprints existed) means the weights would mix two
trainings: the whole checkpoint dir, with the training's log (train_log.jsonl inside), is moved to
<ckpt_dir>.stale-<first 8 hex digits of its fingerprint>/, and the run resumes from a stale set of
its own fingerprint when there is one (an edit reverted: it is moved back), else starts fresh. The
STALE_SETS_KEPT most recently moved-aside sets are kept, older ones deleted. A checkpoint that fails
its sha256 or does not load is renamed to corrupt.step_<N>/ with a warning and the next older one is
tried; when none loads the run starts fresh with a warning (training from scratch gives the same
weights, only later). state.pt is read with torch.load(weights_only=True): a pickle that would run
code or build any object but tensors and plain values is refused, naming the file and its globals.
Every decision is printed to stderr (the stage log): "resuming from step N (fingerprint ...)",
"resuming from the stale set ..." or "starting fresh: <why>".
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
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
# train keys that change how a run is launched, logged or checkpointed, never the weights (nor the final
# loss / validation loss of train_summary.json: the last step is always logged, validated and saved):
# kept out of the fingerprint and of the train rule's params (workflow/rules/train.smk). Validation
# runs in eval mode under no_grad and draws no random numbers, so val_every leaves training as it is.
OPERATIONAL_TRAIN_KEYS = ("gpus", "nodes", "rdzv_port", "peak_tflops", "tensorboard", "wandb",
                          "log_every", "val_every", "checkpoint_every", "keep_checkpoints", "max_consecutive_skips")
STALE_SETS_KEPT = 3  # checkpoint sets of other fingerprints kept beside the checkpoint dir
STALE_LOG = "train_log.jsonl"  # a stale set's copy of its training's log
PACKAGE_DIR = Path(__file__).resolve().parent
# The code a training runs: the train stage's (softpick.stages.code, what the train rule lists), but the
# exporter (its edit reruns the train rule, which resumes from the final checkpoint and re-exports) and the
# config schemas outside the package (they only validate: an edit reruns the rule, which resumes).
TRAIN_STAGE_MODULE = "softpick.stages.train"
EXPORT_ONLY_CODE = ("hf_export.py",)


def say(message: str) -> None:
    """One line of the stage log (stderr, where the progress bar also goes)."""
    print(f"softpick train: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- fingerprint
def training_code_files(root: Path = PACKAGE_DIR) -> list[Path]:
    """The source files of the train stage under root (a package dir), sorted, without EXPORT_ONLY_CODE and
    the files outside root (the schemas, linked from root/_resources)."""
    from .stages.code import code_files

    root = Path(root).resolve()
    return [p for p in code_files([TRAIN_STAGE_MODULE], root)
            if p.is_relative_to(root) and p.relative_to(root).as_posix() not in EXPORT_ONLY_CODE]


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
        "code": {f"softpick/{p.relative_to(Path(code_root).resolve()).as_posix()}": sha256_file(p)
                 for p in training_code_files(code_root)},
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
    """Every generator's state as tensors and plain values (numpy's key array as an int64 tensor), which
    torch.load reads with weights_only=True."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"]["key"] = torch.from_numpy(numpy_state["state"]["key"].astype(np.int64))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    numpy_state = dict(state["numpy"])
    numpy_state["state"] = {**numpy_state["state"], "key": numpy_state["state"]["key"].numpy().astype(np.uint32)}
    np.random.set_state(numpy_state)
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


class UnsafeCheckpointError(ValueError):
    """A state.pt whose pickle names globals outside torch's weights-only allow-list (it could run code)."""


def load_state(path: Path, map_location) -> dict:
    """state.pt of one checkpoint, unpickled with weights_only=True (tensors and plain values only: never
    code). mmap: N ranks of one node page in one file instead of N full copies in memory."""
    file = Path(path) / STATE_FILE
    try:
        return torch.load(file, map_location=map_location, weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        try:
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(file)) or "none listed"
        except Exception:  # noqa: BLE001 (not a torch zip file: the unpickling error says enough)
            found = str(err).strip().splitlines()[0]
        raise UnsafeCheckpointError(f"{file}: its pickle needs globals a checkpoint never holds ({found}); "
                                    f"not unpickled (it could run code)") from None


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
    except UnsafeCheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 (any failure to unpickle is a corrupt file)
        raise ValueError(f"{path / STATE_FILE} does not load ({type(err).__name__}: {err})") from None


def stale_sets(ckpt_dir: Path) -> list[Path]:
    """The checkpoint sets moved aside from ckpt_dir (<ckpt_dir>.stale-*/), most recently moved first."""
    ckpt_dir = Path(ckpt_dir)
    found = [p for p in ckpt_dir.parent.glob(f"{ckpt_dir.name}.stale-*") if p.is_dir()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True)


def _set_fingerprint(ckpt_dir: Path) -> str | None:
    """The fingerprint a set's newest complete checkpoint records (its fingerprint.json checked against
    the COMPLETE marker; state.pt is checked on resume). None when unknown."""
    done = list_checkpoints(ckpt_dir)
    if not done:
        return None
    try:
        marker = json.loads((done[-1] / COMPLETE_MARKER).read_text())
        fp_file = done[-1] / FINGERPRINT_FILE
        if sha256_file(fp_file) != marker["sha256"][FINGERPRINT_FILE]:
            return None
        return json.loads(fp_file.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _move_stale(ckpt_dir: Path, old_fingerprint: str | None, log_path: Path | None) -> Path:
    """Move ckpt_dir (with the training's log) aside to <ckpt_dir>.stale-<fp8>/."""
    target = ckpt_dir.parent / f"{ckpt_dir.name}.stale-{(old_fingerprint or 'none')[:8]}"
    if target.exists():  # an older set of the same fingerprint
        shutil.rmtree(target)
    if log_path is not None and log_path.exists():
        os.replace(log_path, ckpt_dir / STALE_LOG)
    os.replace(ckpt_dir, target)
    os.utime(target)  # its age among the stale sets: when it was moved aside
    return target


def _restore_stale(ckpt_dir: Path, expected: dict, log_path: Path | None) -> Path | None:
    """Move the newest stale set of the expected fingerprint back to ckpt_dir (which holds no complete
    checkpoint), its log back to log_path; the set's former path, or None when there is none."""
    for candidate in stale_sets(ckpt_dir):
        if _set_fingerprint(candidate) != expected["fingerprint"]:
            continue
        if ckpt_dir.exists():
            shutil.rmtree(ckpt_dir)  # leftovers only: unfinished saves, corrupt.* checkpoints
        os.replace(candidate, ckpt_dir)
        if log_path is not None:
            if (ckpt_dir / STALE_LOG).exists():
                os.replace(ckpt_dir / STALE_LOG, log_path)
            else:
                log_path.unlink(missing_ok=True)  # another training's log
        return candidate
    return None


def _quarantine(path: Path) -> Path:
    target = path.parent / f"{CORRUPT_PREFIX}{path.name}"
    if target.exists():
        shutil.rmtree(target)
    os.replace(path, target)
    return target


def find_resume_state(ckpt_dir: Path, expected: dict, map_location,
                      log_path: Path | None = None) -> tuple[dict | None, Path | None]:
    """(state, checkpoint path) to resume from, or (None, None) to start fresh; says which and why.

    log_path: the training's JSONL log, moved with a set that is moved aside and back."""
    ckpt_dir = Path(ckpt_dir)
    log_path = Path(log_path) if log_path is not None else None
    fp = expected["fingerprint"][:12]
    why = f"no checkpoint in {ckpt_dir}"
    for attempt in ("here", "restored"):
        checkpoints = list_checkpoints(ckpt_dir)
        for path in reversed(checkpoints):
            try:
                state = _try_checkpoint(path, expected, map_location)
            except _Stale as stale:
                moved = _move_stale(ckpt_dir, stale.old_fingerprint, log_path)
                why = f"{stale}; the old checkpoints were moved to {moved}"
                break
            except ValueError as err:
                moved = _quarantine(path)
                what = "is refused" if isinstance(err, UnsafeCheckpointError) else "is corrupt"
                say(f"warning: checkpoint {path} {what}: {err}; renamed to {moved.name}, trying an older one")
                continue
            if log_path is not None and (ckpt_dir / STALE_LOG).exists():  # a move aside cut short by a kill
                os.replace(ckpt_dir / STALE_LOG, log_path)
            say(f"resuming from step {state['step']} (fingerprint {fp}, {path})")
            return state, path
        else:
            if checkpoints:
                say(f"warning: starting fresh (fingerprint {fp}): no checkpoint in {ckpt_dir} loads")
                return None, None
        if attempt == "here":
            restored = _restore_stale(ckpt_dir, expected, log_path)
            for old in stale_sets(ckpt_dir)[STALE_SETS_KEPT:]:  # after the restore: it may be the oldest
                shutil.rmtree(old, ignore_errors=True)
            if restored is None:
                break
            say(f"resuming from the stale set {restored} ({why}): its fingerprint {fp} matches; moved back to {ckpt_dir}")
    say(f"starting fresh (fingerprint {fp}): {why}")
    return None, None
