"""Launchers, block configs and the torch.library custom ops (with autograd and fake impls).

`softpick_flash_attention(q, k, v, scale=None, causal=True, cu_seqlens=None)`:
    q [B, T, H, D], k / v [B, S, Hkv, D] (H % Hkv == 0), out [B, T, H, D] in q's dtype.
    causal aligns the last query with the last key (offset S - T), as the reference does.
    cu_seqlens (int32/int64 [N + 1]) packs N documents along T with B = 1 (k / v share it);
    no token attends across a document boundary.
Inputs are fp16, bf16 or fp32; every dot accumulates in fp32 (fp32 inputs use IEEE fp32 dots).
"""
from __future__ import annotations

import os

import torch
import triton

from ..reference import EPS
from .kernels import (
    softpick_bwd_dkdv_kernel,
    softpick_bwd_dq_kernel,
    softpick_bwd_preprocess_kernel,
    softpick_fwd_kernel,
)

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _env_cfg(name: str, block_d: int | None = None, dtype: torch.dtype | None = None):
    """SOFTPICK_{FWD,DKDV,DQ}_CFG[_D<BLOCK_D>]="BLOCK_M,BLOCK_N,num_warps,num_stages" overrides (tuning);
    the per-head-dim variable (e.g. SOFTPICK_DKDV_CFG_D64) wins over the plain one. They apply to
    fp16 / bf16 only: fp32 tiles need about twice the shared memory (an H200 sweep's bf16 winners
    overflowed it in fp32 at D >= 96)."""
    if dtype == torch.float32:
        return None
    val = os.environ.get(f"{name}_D{block_d}") if block_d is not None else None
    val = val or os.environ.get(name)
    if not val:
        return None
    bm, bn, w, s = (int(x) for x in val.split(","))
    return bm, bn, w, s


# (BLOCK_M, BLOCK_N, num_warps, num_stages) per kernel. fp32: one config per kernel (twice the shared
# memory of 16-bit tiles). fp16 / bf16: (largest BLOCK_D, config) rows, first match wins; numbers from the
# H200 sweeps in benchmarks/NOTES.md (v1: fwd 64x64 w4 s3 best at D = 64 and 128; v3: dK/dV 32x64 w4 at
# D = 64, 0.737 vs 0.769 ms bwd; at D = 128 the 64x128 w8 dK/dV and 128x64 w8 dQ stay best although
# ptxas reports spills).
_INTERPRET_CFG = (32, 32, 4, 1)
_FP32_CFG = {"fwd": (64, 64, 4, 2), "fwd_wide": (64, 32, 4, 2), "dkdv": (32, 64, 4, 2), "dq": (64, 32, 4, 2)}
_CFG = {
    "fwd": [(128, (64, 64, 4, 3)), (256, (64, 64, 8, 2))],
    "dkdv": [(64, (32, 64, 4, 3)), (128, (64, 128, 8, 3)), (256, (32, 64, 8, 2))],
    "dq": [(64, (64, 64, 4, 3)), (128, (128, 64, 8, 3)), (256, (64, 32, 8, 2))],
}
_ENV = {"fwd": "SOFTPICK_FWD_CFG", "dkdv": "SOFTPICK_DKDV_CFG", "dq": "SOFTPICK_DQ_CFG"}


def block_config(kernel: str, block_d: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, num_warps, num_stages) of kernel 'fwd' | 'dkdv' | 'dq' (env override first)."""
    c = _env_cfg(_ENV[kernel], block_d, dtype)
    if c:
        return c
    if INTERPRET:
        return _INTERPRET_CFG
    if dtype == torch.float32:
        return _FP32_CFG["fwd_wide" if kernel == "fwd" and block_d > 64 else kernel]
    return next(cfg for max_d, cfg in _CFG[kernel] if block_d <= max_d)


def _dims(q, k, cu_seqlens):
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    if cu_seqlens is not None:
        n_seq = cu_seqlens.numel() - 1
        max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max().item()) if n_seq > 0 else 0
    else:
        n_seq, max_len = B, T
    return B, T, S, H, Hkv, D, n_seq, max_len


def flash_fwd(q, k, v, cu_seqlens, scale: float, causal: bool):
    B, T, S, H, Hkv, D, n_seq, max_len = _dims(q, k, cu_seqlens)
    tot = B * T
    o = torch.empty_like(q)
    lse = torch.empty((H, tot), device=q.device, dtype=torch.float32)
    if tot == 0 or n_seq == 0 or max_len == 0:
        return o, lse
    block_d = max(16, triton.next_power_of_2(D))
    bm, bn, w, st = block_config("fwd", block_d, q.dtype)
    grid = (triton.cdiv(max_len, bm), n_seq * H)
    softpick_fwd_kernel[grid](
        q, k, v, o, lse, cu_seqlens, scale * LOG2E, T, S, tot, H=H, G=H // Hkv, D=D, BLOCK_D=block_d,
        BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal, IS_VARLEN=cu_seqlens is not None,
        IEEE=q.dtype == torch.float32, EPS=EPS, num_warps=w, num_stages=st,
    )
    return o, lse


def flash_bwd(do, q, k, v, o, lse, cu_seqlens, scale: float, causal: bool):
    B, T, S, H, Hkv, D, n_seq, max_len = _dims(q, k, cu_seqlens)
    tot = B * T
    dq = torch.empty_like(q)
    dk = torch.empty_like(k)
    dv = torch.empty_like(v)
    if tot == 0 or n_seq == 0 or max_len == 0:
        return dq.zero_(), dk.zero_(), dv.zero_()
    if B * S == 0:
        return dq.zero_(), dk, dv
    block_d = max(16, triton.next_power_of_2(D))
    delta = torch.empty((H, tot), device=q.device, dtype=torch.float32)
    pre_bm = 32 if INTERPRET else 64
    softpick_bwd_preprocess_kernel[(triton.cdiv(tot, pre_bm), H)](
        o, do, delta, tot, H=H, D=D, BLOCK_D=block_d, BLOCK_M=pre_bm
    )
    max_s = max_len if cu_seqlens is not None else S
    G = H // Hkv
    ieee = q.dtype == torch.float32
    varlen = cu_seqlens is not None
    bm, bn, w, st = block_config("dkdv", block_d, q.dtype)
    softpick_bwd_dkdv_kernel[(triton.cdiv(max_s, bn), n_seq * Hkv)](
        q, k, v, do, lse, delta, dk, dv, cu_seqlens, scale * LOG2E, scale, T, S, tot,
        H=H, G=G, D=D, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal, IS_VARLEN=varlen,
        IEEE=ieee, num_warps=w, num_stages=st,
    )
    bm, bn, w, st = block_config("dq", block_d, q.dtype)
    softpick_bwd_dq_kernel[(triton.cdiv(max_len, bm), n_seq * H)](
        q, k, v, do, lse, delta, dq, cu_seqlens, scale * LOG2E, scale, T, S, tot,
        H=H, G=G, D=D, BLOCK_D=block_d, BLOCK_M=bm, BLOCK_N=bn, CAUSAL=causal, IS_VARLEN=varlen,
        IEEE=ieee, num_warps=w, num_stages=st,
    )
    if varlen:
        # tokens outside every document (cu_seqlens[-1] < T) get no gradient
        last = int(cu_seqlens[-1].item())
        if last < T:
            dq[:, last:].zero_()
            dk[:, last:].zero_()
            dv[:, last:].zero_()
    return dq, dk, dv


# ---------------------------------------------------------------- custom ops (torch.compile-able)

@torch.library.custom_op("softpick::flash_attn_fwd", mutates_args=(), device_types=None)
def _flash_attn_fwd(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor | None, scale: float, causal: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    return flash_fwd(q, k, v, cu_seqlens, scale, causal)


@_flash_attn_fwd.register_fake
def _(q, k, v, cu_seqlens, scale, causal):
    B, T, H, _ = q.shape
    return torch.empty_like(q), q.new_empty((H, B * T), dtype=torch.float32)


@torch.library.custom_op("softpick::flash_attn_bwd", mutates_args=(), device_types=None)
def _flash_attn_bwd(
    do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor, lse: torch.Tensor,
    cu_seqlens: torch.Tensor | None, scale: float, causal: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return flash_bwd(do, q, k, v, o, lse, cu_seqlens, scale, causal)


@_flash_attn_bwd.register_fake
def _(do, q, k, v, o, lse, cu_seqlens, scale, causal):
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)


def _setup_context(ctx, inputs, output):
    q, k, v, cu_seqlens, scale, causal = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, cu_seqlens)
    ctx.scale = scale
    ctx.causal = causal


def _backward(ctx, do, dlse):
    q, k, v, o, lse, cu_seqlens = ctx.saved_tensors
    dq, dk, dv = _flash_attn_bwd(do.contiguous(), q, k, v, o, lse, cu_seqlens, ctx.scale, ctx.causal)
    return dq, dk, dv, None, None, None


_flash_attn_fwd.register_autograd(_backward, setup_context=_setup_context)


def softpick_flash_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float | None = None,
    causal: bool = True,
    cu_seqlens: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal (or full) softpick attention, flash-style. q [B, T, H, D], k / v [B, S, Hkv, D] -> [B, T, H, D]."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError("q, k, v must be [B, T, H, D]")
    B, T, H, D = q.shape
    if k.shape != v.shape or k.shape[0] != B or k.shape[3] != D:
        raise ValueError(f"k {tuple(k.shape)} / v {tuple(v.shape)} do not match q {tuple(q.shape)}")
    if H % k.shape[2]:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({k.shape[2]})")
    if not (16 <= D <= 256):
        raise ValueError(f"head dim {D} outside 16..256")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32) or k.dtype != q.dtype or v.dtype != q.dtype:
        raise ValueError(f"q, k, v must share one dtype of fp16 / bf16 / fp32, got {q.dtype}, {k.dtype}, {v.dtype}")
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"with cu_seqlens the batch size must be 1 (packed), got {B}")
        if k.shape[1] != T:
            raise ValueError("with cu_seqlens, k / v must be packed like q")
        cu_seqlens = cu_seqlens.to(torch.int32).contiguous()
    if scale is None:
        scale = D ** -0.5
    o, _ = _flash_attn_fwd(q.contiguous(), k.contiguous(), v.contiguous(), cu_seqlens, float(scale), bool(causal))
    return o
