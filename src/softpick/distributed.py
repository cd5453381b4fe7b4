"""Data-parallel training under torchrun: the settings check and the process-group / FSDP2 plumbing.

check_distributed validates the parallel-training keys for a process count (the train rule calls it at
parse time); join_process_group joins torchrun's group (nccl on CUDA, gloo on CPU); shard_model wraps
each decoder layer and the root with FSDP2 fully_shard; the full_* helpers gather sharded states to
rank 0 on CPU (checkpoints, snapshots, the export) and load them back; peak_memory is what the log
reports per process.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

from .errors import ConfigError

PARALLELISMS = ("ddp", "fsdp")
DTYPES = ("float32", "bfloat16")


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


def join_process_group(device: torch.device, world: int) -> tuple[torch.device, bool]:
    """This rank's device and whether it created the process group (a caller's own group is used as is)."""
    owns_group = False
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            owns_group = True
    return device, owns_group


def shard_model(model, dtype: str) -> None:
    """FSDP2 fully_shard on every decoder layer, then the root, in place."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # bf16: gather parameters in bf16, reduce gradients in fp32; fp32 master weights stay sharded
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
          if dtype == "bfloat16" else MixedPrecisionPolicy())
    for layer in model.model.layers:
        fully_shard(layer, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def full_tensor(t):
    """A sharded DTensor gathered whole (a collective); a plain tensor as it is."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_model_state(model) -> dict:
    """Full (unsharded) model state on rank 0, CPU; a collective on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def full_training_state(model, optimizer) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on rank 0, CPU; a collective on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_training_state(model, optimizer, model_state: dict, optim_state: dict) -> None:
    """full_training_state's dicts back into a sharded model and its optimizer (every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state,
                   options=StateDictOptions(full_state_dict=True))


def peak_memory(device: torch.device) -> tuple[float, str]:
    """Peak memory in GiB of this process: CUDA max allocated, or the CPU max resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cpu_max_rss"  # ru_maxrss is KiB on Linux
