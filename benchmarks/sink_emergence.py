"""When do attention sinks appear? Sink rate, kurtosis and max |activation| over training.

Reads every complete checkpoint a training run kept (train.keep_checkpoints large,
train.checkpoint_every small) and runs the pipeline's analysis (softpick.analysis.analyze_model,
the config's analysis section) on the held-out split for each. Used to size configs/small.yaml:

    python -m softpick data  --config configs/small.yaml
    python -m softpick train --config configs/small.yaml --variant softmax \
        --set train.checkpoint_every=250 --set train.keep_checkpoints=100
    python benchmarks/sink_emergence.py --config configs/small.yaml --variant softmax --out results/bench

Writes <out>/sink_emergence_<run>_<variant>.json (one row per checkpoint: step, tokens, epoch,
sink rates, kurtosis, max |x|, exact-zero sparsity).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", action="append", required=True)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--variant", required=True, choices=("softmax", "softpick"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    a = ap.parse_args()

    import numpy as np
    import torch
    from transformers import AutoTokenizer

    from softpick.analysis import DEFAULT_CFG, analyze_model
    from softpick.atomic import write_json_atomic
    from softpick.config import load_config, run_paths
    from softpick.data import load_tokens
    from softpick.loading import resolve_device
    from softpick.model import build_model
    from softpick.checkpoint import list_checkpoints

    config = load_config(a.config, a.set)
    paths = run_paths(config, ROOT)
    device = resolve_device(a.device)
    ckpt_dir = paths["models"] / f"{a.variant}.checkpoints"
    checkpoints = list_checkpoints(ckpt_dir)
    if not checkpoints:
        raise SystemExit(f"no complete checkpoint under {ckpt_dir}: train with train.keep_checkpoints large first")
    tokens, offsets = load_tokens(paths["data"], "val")
    vocab = len(AutoTokenizer.from_pretrained(paths["data"] / "tokenizer"))
    cfg = {**DEFAULT_CFG, **config["analysis"], "length_sweep": []}
    rows = []
    for ckpt in checkpoints:
        state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False, mmap=True)
        model = build_model(config["model"], a.variant, vocab, config["train"]["seq_len"])
        model.load_state_dict(state["model"])
        model.to(device).eval()
        summary, _ = analyze_model(model, tokens, offsets, cfg, device)
        row = {"step": state["step"], "tokens": state["tokens"], "epoch": state["sampler"]["epoch"],
               "sink_rate": summary["sink_rate"], "kurtosis": summary["kurtosis"], "max_abs": summary["max_abs"],
               "sparsity": summary["sparsity"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model, state
    out = a.out / f"sink_emergence_{config['run_name']}_{a.variant}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"run_name": config["run_name"], "variant": a.variant, "model": config["model"],
              "train": config["train"], "analysis": {k: cfg[k] for k in ("num_docs", "max_len", "sink_eps")},
              "device": str(device), "torch": torch.__version__,
              "gpu": torch.cuda.get_device_name(0) if device.type == "cuda" else None,
              "val_tokens": int(np.asarray(offsets)[-1]), "checkpoints": rows}
    write_json_atomic(out, result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
