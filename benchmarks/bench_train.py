"""Throughput and MFU of the pipeline's own trainer (softpick.train.train) on GPUs.

Runs the real training loop (bf16 autocast, torch.compile, fused AdamW, DDP or FSDP2, the
Triton softpick kernel for softpick) on synthetic tokens for a few steps and reads tokens/s,
MFU and peak memory back from the run's train_log.jsonl. Launch under torchrun for several GPUs:

    python benchmarks/bench_train.py --shape 340m --variant softpick --out results/bench
    torchrun --standalone --nproc_per_node=2 benchmarks/bench_train.py --shape 340m --variant softpick ...

Shapes: "340m" = configs/paper-340m.yaml's model at seq 4096 with the Llama-2 vocabulary size
(32,000); "small" = configs/small.yaml's model, sequence length and vocabulary. Token content
does not change the work done, so the tokens are random and the tokenizer a word-level stand-in
of the right size. Appends one JSON line per run to <out>/train_bench.jsonl (rank 0).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

SHAPES = {"340m": ("configs/paper-340m.yaml", 32000), "small": ("configs/small.yaml", None)}


def synthetic_data(directory: Path, vocab: int, n_tokens: int, seed: int = 0) -> None:
    """tokens_{train,val}.npy / docs_*.npy of random ids and a word-level tokenizer of `vocab` entries."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rng = np.random.default_rng(seed)
    for split, n in (("train", n_tokens), ("val", max(n_tokens // 50, 10_000))):
        np.save(directory / f"tokens_{split}.npy", rng.integers(3, vocab, size=n, dtype=np.int64).astype(np.uint32))
        np.save(directory / f"docs_{split}.npy", np.array([0, n], dtype=np.int64))
    words = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, vocab)}}
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>").save_pretrained(
        directory / "tokenizer")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), required=True)
    ap.add_argument("--variant", choices=("softmax", "softpick"), required=True)
    ap.add_argument("--parallelism", choices=("ddp", "fsdp"), default="ddp")
    ap.add_argument("--micro", type=int, help="micro-batch per GPU (default: the config's)")
    ap.add_argument("--accum", type=int, default=1, help="micro-batches per GPU per optimizer step")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=10, help="first steps left out of the median (compile, autotune)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak per GPU (H100/H200: 989)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to smoke-test this script (gloo, no compile)")
    ap.add_argument("--tag", default="")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    a = ap.parse_args()

    import torch
    import torch.distributed as dist

    from softpick.config import load_config
    from softpick.train import train

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    config_file, vocab = SHAPES[a.shape]
    config = load_config([str(ROOT / config_file)], [])
    tcfg = config["train"]
    micro = a.micro or tcfg["micro_batch_size"]
    vocab = vocab or config["data"]["tokenizer"]["vocab_size"]
    seq = tcfg["seq_len"]
    tcfg.update({
        "micro_batch_size": micro, "global_batch_size": micro * a.accum * world, "max_steps": a.steps,
        "warmup_steps": 1, "log_every": 1, "val_every": 10**9, "val_batches": 0, "checkpoint_every": 10**9,
        "compile": not a.no_compile, "dtype": "bfloat16", "parallelism": a.parallelism,
        "peak_tflops": a.peak_tflops, "gpus": world, "tensorboard": False,
    })
    config["device"] = a.device

    if world > 1:
        if a.device == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if a.device == "cuda" else "gloo")
    work = Path(tempfile.mkdtemp(prefix="bench_train_")) if rank == 0 else None
    if world > 1:
        holder = [str(work) if work else None]
        dist.broadcast_object_list(holder, src=0)
        work = Path(holder[0])
    data_dir = work / "data"
    n_tokens = (a.steps * micro * a.accum * world + 8) * (seq + 1)
    if rank == 0:
        data_dir.mkdir(parents=True)
        synthetic_data(data_dir, vocab, n_tokens)
    if world > 1:
        dist.barrier()

    t0 = time.time()
    summary = train(config, a.variant, data_dir, work / "model", work / "ckpt")
    wall = time.time() - t0
    if rank == 0:
        records = [json.loads(l) for l in (work / "model.train_log.jsonl").read_text().splitlines()]
        timed = [r for r in records if r["step"] > a.warmup]
        tps = statistics.median(r["tokens_per_s"] for r in timed)
        row = {
            "tag": a.tag, "shape": a.shape, "variant": a.variant, "gpus": world, "parallelism": a.parallelism,
            "compile": not a.no_compile, "dtype": "bfloat16", "seq_len": seq, "micro_batch": micro, "accum": a.accum,
            "global_batch_tokens": micro * a.accum * world * seq, "vocab": vocab, "parameters": summary["parameters"],
            "flops_per_token": records[-1]["flops_per_token"], "steps": a.steps, "timed_steps": len(timed),
            "tokens_per_s": tps, "tokens_per_s_per_gpu": tps / world,
            "mfu": statistics.median(r["mfu"] for r in timed),
            "step_s_median": micro * a.accum * world * seq / tps,
            "peak_mem_gib": max(r["peak_mem_gib"] for r in records), "final_loss": records[-1]["loss"],
            "skipped": records[-1]["skipped"], "wall_s_incl_compile_and_export": wall,
            "gpu": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu", "torch": torch.__version__,
        }
        print(json.dumps(row), flush=True)
        a.out.mkdir(parents=True, exist_ok=True)
        with open(a.out / "train_bench.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")
        shutil.rmtree(work, ignore_errors=True)
    if world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
