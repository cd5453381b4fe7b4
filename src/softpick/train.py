"""Pretraining of one attention variant: AdamW, linear warm-up + cosine decay, as in the paper (arXiv 2504.20966).

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
(train.tensorboard) and Weights & Biases (train.wandb): see tracking.py. Checkpoints atomically and
resumes from the newest loadable checkpoint whose fingerprint (config, data manifest, code) matches
this job's, restoring model, optimizer, data position and RNG states; otherwise it starts fresh
(checkpoint.py). train() = _setup, _resume, _run_steps (_optimizer_step, _log_step, _save), _export:
the final model is exported with save_pretrained, its tokenizer beside it (train_export.py). The data
order is windows.py's, the lr schedule schedule.py's, the process group and FSDP2 plumbing distributed.py's.
"""
from __future__ import annotations

import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from . import checkpoint
from .data import load_tokens
from .distributed import (check_distributed, full_model_state, full_tensor, full_training_state, join_process_group,
                          load_full_training_state, peak_memory, shard_model)
from .loading import resolve_device
from .model import build_model, count_parameters
from .schedule import lr_at
from .tracking import RunTracker
from .train_export import SNAPSHOT_DIR, export_model, git_commit, snapshot_steps, write_snapshot
from .windows import WindowSampler, gather_windows, window_bos_id


class NonFiniteError(RuntimeError):
    """Too many consecutive steps had a non-finite loss or gradient norm."""


# ----------------------------------------------------------------------------- validation
@torch.no_grad()
def validation_loss(model, tokens: np.ndarray, seq_len: int, batches: int, batch_size: int, device,
                    bos_id: int | None = None) -> float | None:
    """Mean loss over up to batches x batch_size evenly spaced windows of tokens; None when there are none."""
    n = (len(tokens) - 1) // seq_len
    if batches == 0 or n == 0:
        return None
    starts = np.linspace(0, n - 1, num=min(n, batches * batch_size)).astype(np.int64) * seq_len
    was_training = model.training
    model.eval()
    losses = []
    for i in range(0, len(starts), batch_size):
        x = gather_windows(tokens, starts[i:i + batch_size], seq_len, bos_id).to(device)
        losses.append(_loss(model, x))
    model.train(was_training)
    return float(np.mean(losses))


def _loss(model, x: torch.Tensor) -> float:
    return model(x[:, :-1], targets=x[:, 1:]).loss.item()


# ----------------------------------------------------------------------------- main loop
@dataclass
class _Job:
    """What one training job sets up before its first step (every rank)."""

    config: dict
    variant: str
    out_dir: Path
    ckpt_dir: Path
    device: torch.device
    world: int
    rank: int
    accum: int
    fsdp: bool
    owns_group: bool
    tracker: RunTracker
    tokens: np.ndarray
    val_tokens: np.ndarray
    tokenizer: object
    bos_id: int | None  # train.bos_first: the id written first in every window
    model: torch.nn.Module
    ddp_model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: WindowSampler
    autocast: object
    fingerprint: dict
    n_params: int
    flops_per_token: int

    @property
    def tcfg(self) -> dict:
        return self.config["train"]

    @property
    def seq_len(self) -> int:
        return self.tcfg["seq_len"]


@dataclass
class _Progress:
    """The counters a checkpoint restores besides the model, optimizer, sampler and RNG states."""

    step: int = 0
    skipped: int = 0
    consecutive_skips: int = 0
    tokens_seen: int = 0


def train(config: dict, variant: str, data_dir: str | Path, out_dir: str | Path,
          ckpt_dir: str | Path | None = None, *, stop_after: int | None = None) -> dict:
    """Train `variant` ('softmax' | 'softpick') on data_dir's token files and export to out_dir.

    Resumes from the newest loadable checkpoint in ckpt_dir (default <out_dir>.checkpoints) whose
    fingerprint matches this job's, else starts fresh: see softpick.checkpoint.
    stop_after: return after this many optimizer steps (tests use it to simulate a crash).
    Under torchrun it creates the process group from the environment (and destroys it at the
    end) unless the caller already initialized one, which it then uses and leaves alone: a
    caller that calls train() twice in one process should create the group itself.
    """
    job = _setup(config, variant, Path(data_dir), Path(out_dir), ckpt_dir)
    bar = None
    try:
        progress = _resume(job)
        bar = tqdm(total=job.tcfg["max_steps"], initial=progress.step, desc=f"train {variant}",
                   disable=job.rank != 0, dynamic_ncols=True)
        job.tracker.open(progress.step)  # rank 0: the JSONL log from the resumed step on; the W&B run
        if not _run_steps(job, progress, bar, stop_after):
            return {"step": progress.step, "stopped_early": True}
        return _export(job, progress)
    except BaseException:
        job.tracker.close(exit_code=1)  # W&B marks the run failed
        raise
    finally:
        if bar is not None:
            bar.close()
        job.tracker.close()
        if job.owns_group and dist.is_initialized():
            dist.destroy_process_group()


def _setup(config: dict, variant: str, data_dir: Path, out_dir: Path, ckpt_dir) -> _Job:
    """Device, process group, data, tokenizer, seeded model, optimizer, sampler, fingerprint."""
    tcfg = config["train"]
    seed = tcfg.get("seed", config["seed"])  # train.seed: another initialisation / window order on the same data
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else out_dir.parent / f"{out_dir.name}.checkpoints"

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = resolve_device(config["device"])
    accum = check_distributed(tcfg, world)
    fsdp = tcfg.get("parallelism", "ddp") == "fsdp" and world > 1
    # JSONL log + optional TensorBoard / W&B; imports checked on every rank, before any collective
    tracker = RunTracker(config, variant, out_dir, ckpt_dir, rank=rank)

    device, owns_group = join_process_group(device, world)
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
    bos_id = window_bos_id(tcfg, tokenizer)  # train.bos_first: training and validation windows start with BOS

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
        shard_model(model, tcfg.get("dtype", "float32"))
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
    return _Job(config=config, variant=variant, out_dir=out_dir, ckpt_dir=ckpt_dir, device=device, world=world,
                rank=rank, accum=accum, fsdp=fsdp, owns_group=owns_group, tracker=tracker, tokens=tokens,
                val_tokens=val_tokens, tokenizer=tokenizer, bos_id=bos_id, model=model, ddp_model=ddp_model, optimizer=optimizer,
                sampler=sampler, autocast=autocast, fingerprint=checkpoint.fingerprint(config, variant, data_dir),
                n_params=n_params, flops_per_token=flops_per_token)


def _resume(job: _Job) -> _Progress:
    """Restore the newest usable checkpoint of this job's fingerprint, or keep the fresh start.

    Rank 0 chooses (and moves stale or corrupt checkpoints aside, with the log of their training); the
    others load what it chose.
    """
    map_location = "cpu" if job.fsdp else job.device
    state, path = (checkpoint.find_resume_state(job.ckpt_dir, job.fingerprint, map_location, job.tracker.log_path)
                   if job.rank == 0 else (None, None))
    if job.world > 1:
        chosen = [str(path) if path else None]
        dist.broadcast_object_list(chosen, src=0)
        if job.rank != 0 and chosen[0] is not None:
            path = Path(chosen[0])
            state = checkpoint.load_state(path, map_location)
    if state is None:
        return _Progress()
    written_with = state.get("parallelism", "ddp")
    if written_with != ("fsdp" if job.fsdp else "ddp"):
        raise ValueError(f"checkpoint {path} was written with train.parallelism {written_with!r}; "
                         f"resume it with the same setting (or move {job.ckpt_dir} away)")
    if job.fsdp:
        load_full_training_state(job.model, job.optimizer, state["model"], state["optimizer"])
    else:
        job.model.load_state_dict(state["model"])
        job.optimizer.load_state_dict(state["optimizer"])
    job.sampler.load_state_dict(state["sampler"])
    rng = state["rng"]
    if isinstance(rng, list):  # one per rank; a run resumed on another process count reuses rank 0's
        rng = rng[job.rank] if job.rank < len(rng) else rng[0]
    checkpoint.set_rng_state(rng)
    return _Progress(*(state[k] for k in ("step", "skipped", "consecutive_skips", "tokens")))


def _run_steps(job: _Job, progress: _Progress, bar, stop_after: int | None) -> bool:
    """Optimizer steps up to train.max_steps, logging and checkpointing; False when stop_after ended it."""
    tcfg = job.tcfg
    t_last, tokens_last = time.perf_counter(), progress.tokens_seen
    max_skips = tcfg.get("max_consecutive_skips", 10)
    steps_this_call = 0
    job.model.train()
    if progress.step == 0:
        _snapshot(job, progress)  # the initial weights: step 0 of the dynamics analysis
    while progress.step < tcfg["max_steps"]:
        lr, loss_sum, grad_norm = _optimizer_step(job, progress)
        steps_this_call += 1
        if progress.consecutive_skips >= max_skips:
            raise NonFiniteError(
                f"{progress.consecutive_skips} consecutive steps with non-finite loss or gradient norm (last at step "
                f"{progress.step}); raise train.max_consecutive_skips or lower train.lr"
            )
        step = progress.step
        if step % tcfg.get("log_every", 10) == 0 or step == tcfg["max_steps"] or step == 1:
            now = time.perf_counter()
            tps = (progress.tokens_seen - tokens_last) / max(now - t_last, 1e-9)
            _log_step(job, progress, lr, loss_sum, grad_norm, tps, bar)
            t_last, tokens_last = time.perf_counter(), progress.tokens_seen  # the next interval excludes validation
        bar.update(1)
        _snapshot(job, progress)  # before the checkpoint: a checkpoint at step s implies the snapshots up to s
        if step % tcfg.get("checkpoint_every", 100) == 0 or step == tcfg["max_steps"]:
            _save(job, progress)
        if stop_after is not None and steps_this_call >= stop_after:
            return False
    return True


def _optimizer_step(job: _Job, progress: _Progress) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One optimizer step over the global batch (skipped when non-finite); returns lr, loss, grad norm."""
    tcfg, accum, mbs, seq_len = job.tcfg, job.accum, job.tcfg["micro_batch_size"], job.seq_len
    model, ddp_model, optimizer, fsdp, world = job.model, job.ddp_model, job.optimizer, job.fsdp, job.world
    lr = lr_at(progress.step, tcfg)
    for group in optimizer.param_groups:
        group["lr"] = lr
    starts = job.sampler.next_starts(tcfg["global_batch_size"])
    mine = starts[job.rank * accum * mbs:(job.rank + 1) * accum * mbs]  # this rank's share of the global batch
    loss_sum = torch.zeros((), device=job.device)
    for micro in range(accum):
        chunk = mine[micro * mbs:(micro + 1) * mbs]
        x = gather_windows(job.tokens, chunk, seq_len, job.bos_id).to(job.device, non_blocking=True)
        last = micro == accum - 1
        if fsdp:
            model.set_requires_gradient_sync(last)
            sync = nullcontext()
        else:
            sync = ddp_model.no_sync() if world > 1 and not last else nullcontext()
        with sync:
            with job.autocast:
                loss = ddp_model(x[:, :-1], targets=x[:, 1:]).loss
            (loss / accum).backward()
        loss_sum += loss.detach() / accum
    if world > 1:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    clip = tcfg.get("grad_clip")
    grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(model.parameters(), clip if clip else float("inf")))
    if bool(torch.isfinite(loss_sum)) and bool(torch.isfinite(grad_norm)):
        optimizer.step()
        progress.consecutive_skips = 0
    else:
        progress.skipped += 1
        progress.consecutive_skips += 1
    optimizer.zero_grad(set_to_none=True)
    progress.step += 1
    progress.tokens_seen += tcfg["global_batch_size"] * seq_len
    return lr, loss_sum, grad_norm


def _log_step(job: _Job, progress: _Progress, lr: float, loss_sum, grad_norm, tps: float, bar) -> None:
    """One record to the tracker (validation loss on its steps); the progress bar's postfix."""
    tcfg, step = job.tcfg, progress.step
    record = {"step": step, "loss": float(loss_sum), "lr": lr, "grad_norm": float(grad_norm),
              "tokens": progress.tokens_seen, "tokens_per_s": tps, "skipped": progress.skipped,
              "epoch": job.sampler.epoch, "flops_per_token": job.flops_per_token, "world_size": job.world}
    peak_flops = tcfg.get("peak_tflops")
    if peak_flops:  # model FLOP utilisation over all processes (tokens_per_s is global)
        record["mfu"] = job.flops_per_token * tps / (peak_flops * 1e12 * job.world)
    record["peak_mem_gib"], record["peak_mem_kind"] = peak_memory(job.device)
    if step % tcfg.get("val_every", 50) == 0 or step == tcfg["max_steps"]:
        if job.fsdp or job.rank == 0:  # sharded weights: every rank takes part in the forward
            with job.autocast:
                record["val_loss"] = validation_loss(job.model, job.val_tokens, job.seq_len, tcfg.get("val_batches", 8),
                                                     tcfg["micro_batch_size"], job.device, job.bos_id)
    job.tracker.log(record)
    if job.rank == 0:
        bar.set_postfix(loss=f"{record['loss']:.3f}", tok_s=f"{tps:,.0f}")


def _save(job: _Job, progress: _Progress) -> None:
    """A checkpoint of the current step with this job's fingerprint (rank 0 writes; a collective)."""
    world, rank, fsdp = job.world, job.rank, job.fsdp
    rng = checkpoint.rng_state()
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, rng)
        rng = gathered
    if fsdp:
        model_state, optim_state = full_training_state(job.model, job.optimizer)  # collective: every rank
    elif rank == 0:
        model_state, optim_state = job.model.state_dict(), job.optimizer.state_dict()
    if rank == 0:
        checkpoint.save_checkpoint(job.ckpt_dir, progress.step, {
            "model": model_state, "optimizer": optim_state, "sampler": job.sampler.state_dict(),
            "rng": rng, "step": progress.step, "skipped": progress.skipped,
            "consecutive_skips": progress.consecutive_skips, "tokens": progress.tokens_seen,
            "parallelism": "fsdp" if fsdp else "ddp", "world_size": world},
            keep=job.tcfg.get("keep_checkpoints", 2), fingerprint=job.fingerprint)
    if fsdp or rank == 0:
        del model_state, optim_state
    if world > 1:
        dist.barrier()


def _snapshot(job: _Job, progress: _Progress) -> None:
    """The weights at a snapshot step (train.snapshot_every) as <ckpt_dir>/snapshots/step_<N>.safetensors.

    They live beside the checkpoints, so a resumed training keeps them and a training with another
    fingerprint moves them aside with its checkpoints; the export links them into the model directory."""
    step = progress.step
    if step not in snapshot_steps(job.tcfg):
        return
    if job.fsdp:
        state = full_model_state(job.model)
    else:
        state = job.model.state_dict() if job.rank == 0 else None
    if job.rank == 0:
        write_snapshot(state, job.ckpt_dir / SNAPSHOT_DIR, step)
    if job.world > 1:
        dist.barrier()


def _export(job: _Job, progress: _Progress) -> dict:
    """The final model (gathered from the shards under FSDP) with its tokenizer, log and summary."""
    tcfg, config, rank = job.tcfg, job.config, job.rank
    summary = {"variant": job.variant, "steps": progress.step, "tokens": progress.tokens_seen,
               "skipped_steps": progress.skipped, "parameters": job.n_params, "final_loss": None,
               "git_commit": git_commit(), "world_size": job.world,
               "parallelism": tcfg.get("parallelism", "ddp") if job.world > 1 else "none",
               "dtype": tcfg.get("dtype", "float32"), "fingerprint": job.fingerprint["fingerprint"]}
    export_source = job.model
    if job.fsdp:
        full = full_model_state(job.model)
        if rank == 0:
            export_source = build_model(config["model"], job.variant, len(job.tokenizer), job.seq_len)
            export_source.load_state_dict(full)
    if rank == 0:
        records = job.tracker.close_log()
        summary["final_loss"] = records[-1]["loss"] if records else None
        summary["final_val_loss"] = next((r["val_loss"] for r in reversed(records) if r.get("val_loss") is not None), None)
        export_model(export_source, job.tokenizer, job.out_dir, config, summary, job.tracker.log_path,
                     snapshots=job.ckpt_dir / SNAPSHOT_DIR)
        job.tracker.summarize(summary)
    if job.world > 1:
        dist.barrier()
    return summary
