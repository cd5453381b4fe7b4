"""The paper's claims over training: every metric of the analysis at each weight snapshot.

The train stage keeps the weights at fixed steps (train.snapshot_every, listed in the model
directory's snapshots.json with their sha256). For each snapshot this stage measures:

* validation loss: the training's own validation windows (train.validation_loss, train.val_batches
  x train.micro_batch_size windows of train.seq_len, BOS first when train.bos_first), in float32;
* sink rate (eps of analysis.sink_eps) at each length of dynamics.lengths and at analysis.max_len,
  kurtosis, max |h|, exact-zero attention sparsity and dead heads: softpick.analysis.analyze_model
  with the accumulators of those metrics only (METRICS) on the first dynamics.num_docs validation
  documents (each truncated, BOS at position 0).

So the sink-emergence curve (Gu et al. 2024) and the dead-heads-vs-step analysis (the paper's v4
section 7.2) come out of one pass, with the same definitions as the analyze stage.
Output: results/<run>/dynamics/<variant>.json, one record per snapshot.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .analysis import analyze_model
from .atomic import sha256_file, write_json_atomic
from .finite import check_finite_metrics

DEFAULT_DYNAMICS: dict = {
    "num_docs": 64,          # validation documents per snapshot
    "lengths": [64, 256],    # sink rate at these truncation lengths, beside analysis.max_len
}


# the analysis accumulators (softpick.analysis.registry) a snapshot's record reads
METRICS = ("sinks", "dead_heads", "moments", "sparsity", "length_sweep")


class SnapshotError(ValueError):
    """A snapshot listed in snapshots.json is missing or does not match its sha256."""


def list_snapshots(model_dir: str | Path) -> list[dict]:
    """The snapshots of a trained model (snapshots.json), each checked against its sha256."""
    from .hf_export import verify_model_dir

    model_dir = Path(model_dir)
    verify_model_dir(model_dir)  # config.json and snapshots.json as exported
    index = model_dir / "snapshots.json"
    if not index.is_file():
        raise SnapshotError(f"{index} not found: the model was trained without train.snapshot_every "
                            "(rerun the train stage)")
    snaps = json.loads(index.read_text())["snapshots"]
    if not snaps:
        raise SnapshotError(f"{index} lists no snapshots: set train.snapshot_every > 0 and retrain")
    for s in snaps:
        path = model_dir / s["file"]
        if not path.is_file():
            raise SnapshotError(f"snapshot {path} listed in {index} is missing")
        if sha256_file(path) != s["sha256"]:
            raise SnapshotError(f"snapshot {path} does not match its sha256 in {index} (corrupt or replaced)")
    return snaps


def load_snapshot(model_dir: str | Path, snapshot: dict, device="cpu"):
    """The model of model_dir/config.json with the weights of one snapshot (list_snapshots checked the
    directory and the snapshot's sha256)."""
    from .loading import load_model

    model_dir = Path(model_dir)
    return load_model(model_dir, device=device, weights=model_dir / snapshot["file"], verify=False)


def measure_snapshot(model, data: dict, config: dict, device="cpu") -> dict:
    """One record: validation loss and the analysis metrics of one model (see the module docstring)."""
    from .train import validation_loss

    tcfg, dcfg = config["train"], {**DEFAULT_DYNAMICS, **(config.get("dynamics") or {})}
    acfg = {**config["analysis"], "num_docs": dcfg["num_docs"]}
    with torch.no_grad():
        val = validation_loss(model, data["val_tokens"], tcfg["seq_len"], tcfg.get("val_batches", 8),
                              tcfg["micro_batch_size"], device, data["bos_id"])
    acfg["length_sweep"] = sorted({int(n) for n in dcfg["lengths"] if int(n) < int(acfg["max_len"])})
    summary, _ = analyze_model(model, data["tokens"], data["offsets"], acfg, device, metrics=METRICS)
    sink = {str(s["length"]): s["sink_rate"] for s in summary["length_sweep"]}
    sink[str(summary["max_len"])] = summary["sink_rate"]
    dead = summary["dead_heads"] or {"pct": {}}
    return {
        "val_loss": val,
        "sink_rate": sink,  # length -> {eps: %}
        "kurtosis": summary["kurtosis"],
        "max_abs": summary["max_abs"],
        "sparsity_exact_zero_pct": summary["sparsity"]["exact_zero_pct"],
        "dead_heads_pct": dead["pct"],
        "num_docs": summary["num_docs"],
        "num_tokens": summary["num_tokens"],
    }


def run_dynamics(model_dir: str | Path, data_dir: str | Path, config: dict, out_json: str | Path,
                 device="cpu", progress: bool = True) -> dict:
    """Measure every snapshot of model_dir; write out_json atomically (nothing on error)."""
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer

    from .data import load_tokens
    from .windows import window_bos_id

    model_dir, data_dir = Path(model_dir), Path(data_dir)
    snaps = list_snapshots(model_dir)
    tokens, offsets = load_tokens(data_dir, "val")
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    data = {"tokens": tokens, "offsets": offsets, "val_tokens": tokens,
            "bos_id": window_bos_id(config["train"], tokenizer)}
    records = []
    for snap in tqdm(snaps, desc=f"dynamics {model_dir.name}", disable=not progress):
        model = load_snapshot(model_dir, snap, device)
        records.append({"step": snap["step"], "tokens": snap["tokens"], **measure_snapshot(model, data, config, device)})
        del model
    out = {"variant": model_dir.name, "model_dir": str(model_dir), "data_dir": str(data_dir),
           "config": {**DEFAULT_DYNAMICS, **(config.get("dynamics") or {})},
           "sink_eps": [float(e) for e in config["analysis"]["sink_eps"]], "max_len": int(config["analysis"]["max_len"]),
           "snapshots": records}
    check_finite_metrics(out, out_json, optional=lambda path: path.split(".")[0] == "config")
    write_json_atomic(out_json, out)
    return out


__all__ = ["DEFAULT_DYNAMICS", "METRICS", "SnapshotError", "list_snapshots", "load_snapshot", "measure_snapshot",
           "run_dynamics"]
