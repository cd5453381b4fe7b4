"""The train stage's outputs beside the weights: the step snapshots and the exported model directory.

snapshot_steps says at which steps train.snapshot_every keeps the weights, write_snapshot writes one
(<ckpt_dir>/snapshots/step_<N>.safetensors, beside the checkpoints), and export_model writes the final
model directory (save_pretrained with softpick.hf_export's remote code, the tokenizer, the training log,
train_summary.json, resolved_config.yaml, the snapshots linked in with snapshots.json, the manifest last),
swapped in whole. git_commit is the code version the summaries record (softpick.importer's too).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

SNAPSHOT_DIR = "snapshots"  # train.snapshot_every: weights kept at fixed steps (the dynamics stage reads them)


def git_commit() -> str | None:
    """HEAD of the git checkout holding this package; None outside one (an installed package)."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def snapshot_steps(tcfg: dict) -> list[int]:
    """The steps train.snapshot_every keeps a copy of the weights at (0 and the last step included; [] when off)."""
    every, last = int(tcfg.get("snapshot_every") or 0), int(tcfg["max_steps"])
    return sorted({*range(0, last, every), last}) if every > 0 else []


def snapshot_path(snapshot_dir: Path, step: int) -> Path:
    return Path(snapshot_dir) / f"step_{step:08d}.safetensors"


def write_snapshot(state: dict, snapshot_dir: Path, step: int) -> None:
    """The model state of one snapshot step as snapshot_dir/step_<N>.safetensors (atomically)."""
    from safetensors.torch import save_file

    from .atomic import atomic_path, default_mode

    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}
    with atomic_path(snapshot_path(snapshot_dir, step)) as tmp:
        save_file(tensors, str(tmp))  # no metadata: its order in the header is not stable, the bytes would differ
        os.chmod(tmp, default_mode())  # safetensors writes a new file, 0600


def export_model(model, tokenizer, out_dir: Path, config: dict, summary: dict, log_path: Path,
                 snapshots: Path | None = None) -> None:
    """Everything into a temp dir beside out_dir, then swap it in: never a half-written model. Refuses a
    model with a NaN / inf weight (NonFiniteError, nothing written). Every file gets open()'s mode; the
    manifest (sha256 of every file, checked by the stages that load the model) is written last.

    snapshots: the training's snapshot directory; the snapshots of train.snapshot_every's steps are
    linked into <out_dir>/snapshots/ and listed with their sha256 in snapshots.json (an empty list when
    there are none; the dynamics stage checks them)."""
    import yaml

    from .atomic import write_bytes_atomic
    from .finite import check_finite_model
    from .hf_export import write_manifest

    check_finite_model(model, f"{out_dir} (not exported)")
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)  # with the modeling code + auto_map: loads with trust_remote_code, no softpick needed
    tokenizer.save_pretrained(tmp)
    write_bytes_atomic(tmp / "train_log.jsonl", Path(log_path).read_bytes())
    write_bytes_atomic(tmp / "train_summary.json", json.dumps(summary, indent=2).encode())
    write_bytes_atomic(tmp / "resolved_config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    _export_snapshots(tmp, snapshots, config["train"])
    write_manifest(tmp)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def _export_snapshots(model_dir: Path, snapshots: Path | None, tcfg: dict) -> None:
    """Link (copy across file systems) the snapshots into model_dir/snapshots/; list them in snapshots.json."""
    from .atomic import sha256_file, write_json_atomic

    tokens_per_step = tcfg["global_batch_size"] * tcfg["seq_len"]
    listed = []
    for step in snapshot_steps(tcfg) if snapshots is not None else []:  # None: a model exported outside training
        src = snapshot_path(snapshots, step)
        if not src.exists():
            raise FileNotFoundError(f"snapshot of step {step} (train.snapshot_every) is missing: {src}")
        dst = model_dir / SNAPSHOT_DIR / src.name
        dst.parent.mkdir(exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)
        listed.append({"step": step, "tokens": step * tokens_per_step, "file": f"{SNAPSHOT_DIR}/{src.name}",
                       "sha256": sha256_file(dst)})
    write_json_atomic(model_dir / "snapshots.json", {"snapshot_every": tcfg.get("snapshot_every") or 0,
                                                     "snapshots": listed})
