"""Pretraining of one attention variant: AdamW, linear warm-up + cosine decay, as in PAPER.md.

Single process by default; under torchrun (WORLD_SIZE > 1) it runs data parallel (nccl on CUDA,
gloo on CPU): train.parallelism ddp (DistributedDataParallel, the default) or fsdp (FSDP2
fully_shard per decoder layer + the root; also works with gloo on CPU). Every optimizer step
consumes train.global_batch_size sequences: each of the W ranks takes a contiguous 1/W share of the
global batch and feeds it as global / (micro x W) gradient-accumulation micro-batches of
train.micro_batch_size, so the update is the same (up to float summation order) whatever W is.
Rank 0 alone writes logs, checkpoints and the export. train.dtype bfloat16 runs the forward under
bf16 autocast with fp32 master weights; train.compile compiles the model (torch.compile).
Logs one JSON record per logged step to train_log.jsonl (loss, lr, grad norm, tokens/s,
flops_per_token, MFU when train.peak_tflops is known, peak memory), and optionally to TensorBoard
(train.tensorboard) and Weights & Biases (train.wandb): see tracking.py. Checkpoints atomically (temp
dir, rename, COMPLETE marker last) and resumes from the newest complete checkpoint, restoring
model, optimizer, data position and RNG states. The final model is exported with
save_pretrained, its tokenizer beside it.
"""
from __future__ import annotations

import json
import math
import os
import random
import shutil
import subprocess
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .config import ConfigError
from .data import load_tokens
from .model import SoftpickConfig, SoftpickForCausalLM, count_parameters
from .tracking import RunTracker

COMPLETE_MARKER = "COMPLETE"
PARALLELISMS = ("ddp", "fsdp")
DTYPES = ("float32", "bfloat16")


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""


# ----------------------------------------------------------------------------- data order
class WindowSampler:
    """Non-overlapping windows of seq_len + 1 tokens from one token stream, shuffled per epoch.

    The order depends only on (seed, epoch), so the position (epoch, cursor) is all a
    checkpoint needs to restore it. No document masking: windows cross document boundaries,
    as in the paper's training.
    """

    def __init__(self, n_tokens: int, seq_len: int, seed: int):
        self.seq_len = seq_len
        self.n_windows = (n_tokens - 1) // seq_len
        if self.n_windows < 1:
            raise ValueError(f"the training split has {n_tokens} tokens, fewer than one window of {seq_len + 1}")
        self.seed = seed
        self.epoch = 0
        self.cursor = 0
        self._perm = self._permutation(0)

    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def next_starts(self, count: int) -> np.ndarray:
        out = []
        while len(out) < count:
            if self.cursor == self.n_windows:
                self.epoch += 1
                self.cursor = 0
                self._perm = self._permutation(self.epoch)
            take = min(count - len(out), self.n_windows - self.cursor)
            out.extend(self._perm[self.cursor:self.cursor + take])
            self.cursor += take
        return np.asarray(out, dtype=np.int64) * self.seq_len

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        if state["seq_len"] != self.seq_len or state["seed"] != self.seed:
            raise ValueError("checkpoint was written with another seq_len or seed; refusing to resume")
        self.epoch, self.cursor = state["epoch"], state["cursor"]
        self._perm = self._permutation(self.epoch)


def gather_windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> torch.Tensor:
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    return torch.from_numpy(tokens[idx].astype(np.int64))


# ----------------------------------------------------------------------------- schedule
def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine to min_lr_ratio * lr at max_steps."""
    lr, warmup, total = cfg["lr"], cfg["warmup_steps"], cfg["max_steps"]
    floor = cfg.get("min_lr_ratio", 0.1) * lr
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + 0.5 * (lr - floor) * (1.0 + math.cos(math.pi * progress))


# ----------------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. A directory without the marker is ignored."""
    if not ckpt_dir.exists():
        return []
    done = [p for p in ckpt_dir.glob("step_*") if p.is_dir() and (p / COMPLETE_MARKER).exists()]
    return sorted(done, key=lambda p: int(p.name.split("_")[1]))


def save_checkpoint(ckpt_dir: Path, step: int, state: dict, keep: int) -> Path:
    final = ckpt_dir / f"step_{step:08d}"
    tmp = ckpt_dir / f".tmp_step_{step:08d}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / "state.pt")
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    (final / COMPLETE_MARKER).write_text(json.dumps({"step": step, "time": time.time()}))
    _fsync_dir(final)
    for old in list_checkpoints(ckpt_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


# ----------------------------------------------------------------------------- distributed settings
def check_distributed(tcfg: dict, world: int) -> int:
    """Validate the parallel-training keys for `world` processes; return the accumulation steps.

    Raises ConfigError naming the keys: the global batch must split evenly into micro-batches on
    every process; an unknown parallelism or dtype is refused.
    """
    gbs, mbs = tcfg["global_batch_size"], tcfg["micro_batch_size"]
    if world < 1:
        raise ConfigError(f"the process count must be >= 1, got {world}")
    if gbs % (mbs * world):
        raise ConfigError(
            f"config key 'train.global_batch_size' ({gbs}) must be a multiple of 'train.micro_batch_size' ({mbs}) "
            f"x processes ({world}) = {mbs * world}; change train.global_batch_size, train.micro_batch_size "
            f"or the process count (train.gpus / torchrun --nproc_per_node)"
        )
    parallelism = tcfg.get("parallelism", "ddp")
    if parallelism not in PARALLELISMS:
        raise ConfigError(f"config key 'train.parallelism': {parallelism!r} is not one of {PARALLELISMS}")
    dtype = tcfg.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ConfigError(f"config key 'train.dtype': {dtype!r} is not one of {DTYPES}")
    return gbs // (mbs * world)


def _peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in GiB of this process: CUDA max allocated, or the CPU max resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_max_rss"  # ru_maxrss is KiB on Linux


def _full_tensor(t):
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _fsdp_state(model, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on rank 0, CPU; a collective on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _fsdp_load(model, optimizer, model_state: dict, optim_state: dict) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but torch sees no CUDA device; set device: cpu or auto")
    return torch.device(name)


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def build_model(model_cfg: dict, variant: str, vocab_size: int, seq_len: int) -> SoftpickForCausalLM:
    cfg = SoftpickConfig(
        vocab_size=vocab_size,
        max_position_embeddings=seq_len,
        attention_kind=variant,
        **{k: v for k, v in model_cfg.items()},
    )
    return SoftpickForCausalLM(cfg)


@torch.no_grad()
def validation_loss(model, tokens: np.ndarray, seq_len: int, batches: int, batch_size: int, device) -> float | None:
    n = (len(tokens) - 1) // seq_len
    if batches == 0 or n == 0:
        return None
    starts = np.linspace(0, n - 1, num=min(n, batches * batch_size)).astype(np.int64) * seq_len
    was_training = model.training
    model.eval()
    losses = []
    for i in range(0, len(starts), batch_size):
        x = gather_windows(tokens, starts[i:i + batch_size], seq_len).to(device)
        losses.append(_loss(model, x))
    model.train(was_training)
    return float(np.mean(losses))


def _loss(model, x: torch.Tensor) -> float:
    return model(x[:, :-1], targets=x[:, 1:]).loss.item()


# ----------------------------------------------------------------------------- main loop
def train(config: dict, variant: str, data_dir: str | Path, out_dir: str | Path,
          ckpt_dir: str | Path | None = None, *, stop_after: int | None = None) -> dict:
    """Train `variant` ('softmax' | 'softpick') on data_dir's token files and export to out_dir.

    stop_after: return after this many optimizer steps (tests use it to simulate a crash).
    Under torchrun it creates the process group from the environment (and destroys it at the
    end) unless the caller already initialized one, which it then uses and leaves alone: a
    caller that calls train() twice in one process should create the group itself.
    """
    tcfg, seed = config["train"], config["seed"]
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else out_dir.parent / f"{out_dir.name}.checkpoints"

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config["device"])
    accum = check_distributed(tcfg, world)
    parallelism = tcfg.get("parallelism", "ddp")
    fsdp = parallelism == "fsdp" and world > 1
    # JSONL log + optional TensorBoard / W&B; imports checked on every rank, before any collective
    tracker = RunTracker(config, variant, out_dir, ckpt_dir, rank=rank)

    owns_group = False
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns_group = True
    mbs = tcfg["micro_batch_size"]
    torch.set_num_threads(tcfg.get("threads", 1))
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if tcfg.get("dtype", "float32") == "bfloat16"
                else nullcontext())
    tokens, _ = load_tokens(data_dir, "train")
    val_tokens, _ = load_tokens(data_dir, "val")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    seq_len = tcfg["seq_len"]

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    model = build_model(config["model"], variant, len(tokenizer), seq_len).to(device)
    n_params = count_parameters(model)
    flops_per_token = 6 * count_parameters(model, non_embedding=True) + 6 * config["model"]["num_hidden_layers"] * config["model"]["hidden_size"] * seq_len
    if tcfg.get("compile"):
        # in place: state_dict keys and save_pretrained are unchanged. FSDP2 compiles each decoder
        # layer (its hooks sit between layers); otherwise the whole forward, loss included.
        for module in (model.model.layers if fsdp else [model]):
            module.compile()
    if fsdp:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16: gather parameters in bf16, reduce gradients in fp32; fp32 master weights stay sharded
        mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
              if tcfg.get("dtype", "float32") == "bfloat16" else MixedPrecisionPolicy())
        for layer in model.model.layers:
            fully_shard(layer, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": tcfg.get("weight_decay", 0.1)}, {"params": no_decay, "weight_decay": 0.0}],
        lr=tcfg["lr"], betas=tuple(tcfg.get("betas", (0.9, 0.95))), eps=tcfg.get("eps", 1e-15),
        fused=device.type == "cuda",
    )
    sampler = WindowSampler(len(tokens), seq_len, seed)
    ddp_model = model
    if world > 1 and not fsdp:
        ddp_model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    step, skipped, consecutive_skips, tokens_seen = 0, 0, 0, 0
    checkpoints = list_checkpoints(ckpt_dir)
    if checkpoints:
        # mmap: N ranks of one node page in one file instead of N full copies in memory
        state = torch.load(checkpoints[-1] / "state.pt", map_location="cpu" if fsdp else device, weights_only=False,
                           mmap=True)
        written_with = state.get("parallelism", "ddp")
        if written_with != ("fsdp" if fsdp else "ddp"):
            raise ValueError(f"checkpoint {checkpoints[-1]} was written with train.parallelism {written_with!r}; "
                             f"resume it with the same setting (or move {ckpt_dir} away)")
        if fsdp:
            _fsdp_load(model, optimizer, state["model"], state["optimizer"])
        else:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        rng = state["rng"]
        if isinstance(rng, list):  # one per rank; a run resumed on another process count reuses rank 0's
            rng = rng[rank] if rank < len(rng) else rng[0]
        _set_rng_state(rng)
        step, skipped, consecutive_skips, tokens_seen = (state[k] for k in ("step", "skipped", "consecutive_skips", "tokens"))
        del state

    peak_flops = tcfg.get("peak_tflops")
    bar = tqdm(total=tcfg["max_steps"], initial=step, desc=f"train {variant}", disable=rank != 0, dynamic_ncols=True)
    t_last, tokens_last = time.perf_counter(), tokens_seen
    max_skips = tcfg.get("max_consecutive_skips", 10)
    steps_this_call = 0
    model.train()
    try:
        tracker.open(step)  # rank 0: the JSONL log from the resumed step on; the W&B run
        while step < tcfg["max_steps"]:
            lr = lr_at(step, tcfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            starts = sampler.next_starts(tcfg["global_batch_size"])
            mine = starts[rank * accum * mbs:(rank + 1) * accum * mbs]  # this rank's share of the global batch
            loss_sum = torch.zeros((), device=device)
            for micro in range(accum):
                chunk = mine[micro * mbs:(micro + 1) * mbs]
                x = gather_windows(tokens, chunk, seq_len).to(device, non_blocking=True)
                last = micro == accum - 1
                if fsdp:
                    model.set_requires_gradient_sync(last)
                    sync = nullcontext()
                else:
                    sync = ddp_model.no_sync() if world > 1 and not last else nullcontext()
                with sync:
                    with autocast:
                        loss = ddp_model(x[:, :-1], targets=x[:, 1:]).loss
                    (loss / accum).backward()
                loss_sum += loss.detach() / accum
            if world > 1:
                dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
            clip = tcfg.get("grad_clip")
            grad_norm = _full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf")))
            finite = bool(torch.isfinite(loss_sum)) and bool(torch.isfinite(grad_norm))
            if finite:
                optimizer.step()
                consecutive_skips = 0
            else:
                skipped += 1
                consecutive_skips += 1
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_call += 1
            tokens_seen += tcfg["global_batch_size"] * seq_len
            if consecutive_skips >= max_skips:
                raise NonFiniteError(
                    f"{consecutive_skips} consecutive steps with non-finite loss or gradient norm (last at step {step}); "
                    f"raise train.max_consecutive_skips or lower train.lr"
                )
            if step % tcfg.get("log_every", 10) == 0 or step == tcfg["max_steps"] or step == 1:
                now = time.perf_counter()
                tps = (tokens_seen - tokens_last) / max(now - t_last, 1e-9)
                record = {"step": step, "loss": float(loss_sum), "lr": lr, "grad_norm": float(grad_norm),
                          "tokens": tokens_seen, "tokens_per_s": tps, "skipped": skipped, "epoch": sampler.epoch,
                          "flops_per_token": flops_per_token, "world_size": world}
                if peak_flops:  # model FLOP utilisation over all processes (tokens_per_s is global)
                    record["mfu"] = flops_per_token * tps / (peak_flops * 1e12 * world)
                record["peak_mem_gib"], record["peak_mem_kind"] = _peak_memory(device)
                if step % tcfg.get("val_every", 50) == 0 or step == tcfg["max_steps"]:
                    if fsdp or rank == 0:  # sharded weights: every rank takes part in the forward
                        with autocast:
                            record["val_loss"] = validation_loss(model, val_tokens, seq_len, tcfg.get("val_batches", 8),
                                                                 mbs, device)
                tracker.log(record)
                if rank == 0:
                    bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tps:,.0f}")
                t_last, tokens_last = time.perf_counter(), tokens_seen  # the next interval excludes validation
            bar.update(1)
            if step % tcfg.get("checkpoint_every", 100) == 0 or step == tcfg["max_steps"]:
                rng = _rng_state()
                if world > 1:
                    gathered = [None] * world
                    dist.all_gather_object(gathered, rng)
                    rng = gathered
                if fsdp:
                    model_state, optim_state = _fsdp_state(model, optimizer)  # collective: every rank
                elif rank == 0:
                    model_state, optim_state = model.state_dict(), optimizer.state_dict()
                if rank == 0:
                    save_checkpoint(ckpt_dir, step, {
                        "model": model_state, "optimizer": optim_state, "sampler": sampler.state_dict(),
                        "rng": rng, "step": step, "skipped": skipped, "consecutive_skips": consecutive_skips,
                        "tokens": tokens_seen, "parallelism": "fsdp" if fsdp else "ddp", "world_size": world},
                        keep=tcfg.get("keep_checkpoints", 2))
                if fsdp or rank == 0:
                    del model_state, optim_state
                if world > 1:
                    dist.barrier()
            if stop_after is not None and steps_this_call >= stop_after:
                return {"step": step, "stopped_early": True}
        summary = {"variant": variant, "steps": step, "tokens": tokens_seen, "skipped_steps": skipped,
                   "parameters": n_params, "final_loss": None, "git_commit": git_commit(), "world_size": world,
                   "parallelism": parallelism if world > 1 else "none", "dtype": tcfg.get("dtype", "float32")}
        export_source = model
        if fsdp:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
            if rank == 0:
                export_source = build_model(config["model"], variant, len(tokenizer), seq_len)
                export_source.load_state_dict(full)
        if rank == 0:
            records = tracker.close_log()
            summary["final_loss"] = records[-1]["loss"] if records else None
            summary["final_val_loss"] = next((r["val_loss"] for r in reversed(records) if r.get("val_loss") is not None), None)
            export_model(export_source, tokenizer, out_dir, config, summary, tracker.log_path)
            tracker.summarize(summary)
        if world > 1:
            dist.barrier()
        return summary
    except BaseException:
        tracker.close(exit_code=1)  # W&B marks the run failed
        raise
    finally:
        bar.close()
        tracker.close()
        if owns_group and dist.is_initialized():
            dist.destroy_process_group()


def export_model(model, tokenizer, out_dir: Path, config: dict, summary: dict, log_path: Path) -> None:
    """save_pretrained into a temp dir beside out_dir, then swap it in: never a half-written model."""
    import yaml

    from .hf_export import save_remote_code

    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    save_remote_code(tmp)  # modeling code + auto_map: loads with trust_remote_code, no softpick needed
    shutil.copy(log_path, tmp / "train_log.jsonl")
    (tmp / "train_summary.json").write_text(json.dumps(summary, indent=2))
    (tmp / "resolved_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
