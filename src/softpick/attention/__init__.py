"""Attention functions and the dispatch between the reference and fast paths.

`attention(q, k, v, kind=...)` is the one entry point the model calls. Layout: q [B, T, H, D],
k / v [B, S, Hkv, D]; returns out [B, T, H, D] and, when asked, weights [B, H, T, S].

Backends:
  "torch"  - reference.naive_attention (materialised; the only path that returns weights);
             softmax without weights uses torch SDPA.
  "triton" - the flash-style softpick kernel (softpick.attention.triton), CUDA only.
  "auto"   - triton for softpick on CUDA when no weights / padding mask are requested,
             torch otherwise.
The environment variable SOFTPICK_ATTN_BACKEND (torch | triton | auto) overrides the config.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .reference import EPS, naive_attention

KINDS = ("softmax", "softpick")
BACKENDS = ("auto", "torch", "triton")

__all__ = ["attention", "naive_attention", "resolve_backend", "EPS", "KINDS", "BACKENDS"]


def resolve_backend(backend: str, kind: str, device: torch.device, need_weights: bool, padded: bool) -> str:
    if need_weights and backend != "triton":
        return "torch"  # only the materialised path has weights to return, whatever the environment says
    backend = os.environ.get("SOFTPICK_ATTN_BACKEND", backend)
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        fast_ok = kind == "softpick" and device.type == "cuda" and not need_weights and not padded
        return "triton" if fast_ok and _triton_available() else "torch"
    if backend == "triton":
        if kind != "softpick":
            raise ValueError("the triton backend implements softpick only; use backend 'torch' or 'auto' for softmax")
        if need_weights:
            raise ValueError("the triton backend does not return attention weights; use backend 'torch'")
        if padded:
            raise ValueError("the triton backend takes packed sequences (cu_seqlens), not a padding mask")
    return backend


def _triton_available() -> bool:
    try:
        from . import triton as _  # noqa: F401
    except ImportError:
        return False
    return True


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kind: str = "softpick",
    causal: bool = True,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    return_weights: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if kind not in KINDS:
        raise ValueError(f"unknown attention kind {kind!r}; expected one of {KINDS}")
    padded = attention_mask is not None and not bool(attention_mask.all())
    chosen = resolve_backend(backend, kind, q.device, return_weights, padded)
    if chosen == "triton":
        from .triton import softpick_flash_attention

        if torch.is_autocast_enabled(q.device.type):
            # a custom op gets no autocast casts: under bf16 autocast RoPE leaves q, k in fp32, v in bf16
            dtype = torch.get_autocast_dtype(q.device.type)
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        return softpick_flash_attention(q, k, v, scale=scale, causal=causal), None
    if kind == "softmax" and not return_weights:
        # SDPA wants [B, H, T, D]; GQA through enable_gqa.
        mask = None
        if padded or (causal and q.shape[1] != k.shape[1]):  # SDPA's is_causal aligns top-left; a KV cache needs bottom-right
            from .reference import build_mask

            B, T, S = q.shape[0], q.shape[1], k.shape[1]
            mask = build_mask(B, T, S, causal=causal, attention_mask=attention_mask, device=q.device)
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
            attn_mask=mask, is_causal=causal and mask is None, scale=scale,
            enable_gqa=k.shape[2] != q.shape[2],
        )
        out = out.transpose(1, 2)
        if mask is not None:  # fully masked rows: SDPA gives NaN, the reference 0
            out = out.masked_fill(~mask.any(-1).transpose(1, 2)[..., None], 0.0)
        return out, None
    weights_fn = None
    if kind == "softpick" and not return_weights:
        from .torch_fused import softpick_weights_fused as weights_fn  # same numbers, leaner backward
    out, weights = naive_attention(q, k, v, kind=kind, causal=causal, attention_mask=attention_mask, scale=scale,
                                   weights_fn=weights_fn)
    return out, (weights if return_weights else None)
