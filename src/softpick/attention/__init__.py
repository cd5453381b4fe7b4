"""Attention functions and the dispatch between the reference and fast paths.

`attention(q, k, v, kind=...)` is the one entry point the model calls. Layout: q [B, T, H, D],
k / v [B, S, Hkv, D]; returns out [B, T, H, D] and, when asked, weights [B, H, T, S].
The kinds (softmax, softpick and the sink-free variants) live in `kinds/`, one module each; a kind
with learned parameters gets them as `params` (the model's Attention.kind_params), the gated kind
also the layer input as `layer_input`.

Backends:
  "torch"  - the kind's materialised reference (the only path that returns weights); kinds with
             softmax weights (softmax, gated) use torch SDPA, softpick weights the fused autograd function.
  "triton" - the flash-style softpick kernel (softpick.attention.triton), CUDA only: softpick, and
             scaled softpick on its scaled queries.
  "auto"   - triton for those kinds on CUDA when no weights / padding mask are requested,
             torch otherwise.
The environment variable SOFTPICK_ATTN_BACKEND (torch | triton | auto) overrides the config.
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .kinds import KINDS, REGISTRY, KindParameters, get_kind
from .reference import EPS, naive_attention

BACKENDS = ("auto", "torch", "triton")

__all__ = ["attention", "naive_attention", "resolve_backend", "get_kind", "EPS", "KINDS", "REGISTRY", "BACKENDS",
           "KindParameters"]


def resolve_backend(backend: str, kind: str, device: torch.device, need_weights: bool, padded: bool) -> str:
    if need_weights and backend != "triton":
        return "torch"  # only the materialised path has weights to return, whatever the environment says
    backend = os.environ.get("SOFTPICK_ATTN_BACKEND", backend)
    if backend not in BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {BACKENDS}")
    on_kernel = get_kind(kind).flash_kernel == "softpick"
    if backend == "auto":
        fast_ok = on_kernel and device.type == "cuda" and not need_weights and not padded
        return "triton" if fast_ok and _triton_available() else "torch"
    if backend == "triton":
        if not on_kernel:
            raise ValueError(f"the triton backend implements softpick weights only, not {kind!r}; use backend 'torch' or 'auto'")
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
    params: KindParameters | None = None,
    layer_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    spec = get_kind(kind)
    spec.check_inputs(params, layer_input)
    padded = attention_mask is not None and not bool(attention_mask.all())
    chosen = resolve_backend(backend, kind, q.device, return_weights, padded)
    if return_weights:
        return spec.reference(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale, params=params,
                              layer_input=layer_input)
    q = spec.prepare_query(q, params, k.shape[1])
    if chosen == "triton":
        out = _triton_softpick(q, k, v, scale=scale, causal=causal)
    elif spec.sdpa:
        out = _sdpa_softmax(q, k, v, causal=causal, attention_mask=attention_mask if padded else None, scale=scale)
    else:
        weights_fn = lambda s, m: spec.weights(s, m, params)  # noqa: E731
        if spec.fused_softpick:
            from .torch_fused import softpick_weights_fused as weights_fn  # same numbers, leaner backward
        out, _ = naive_attention(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale, weights_fn=weights_fn)
    return spec.finish(out, params, layer_input), None


def _triton_softpick(q, k, v, *, scale, causal):
    from .triton import softpick_flash_attention

    if torch.is_autocast_enabled(q.device.type):
        # a custom op gets no autocast casts: under bf16 autocast RoPE leaves q, k in fp32, v in bf16
        dtype = torch.get_autocast_dtype(q.device.type)
        q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    return softpick_flash_attention(q, k, v, scale=scale, causal=causal)


def _sdpa_softmax(q, k, v, *, causal, attention_mask, scale):
    """Softmax attention through torch SDPA ([B, H, T, D] inside; GQA through enable_gqa).

    SDPA's is_causal aligns the first query with the first key; with fewer queries than keys (decoding with a
    cache) the last query must see the last key, so the mask is built explicitly (reference.build_mask)."""
    mask = None
    B, T, S = q.shape[0], q.shape[1], k.shape[1]
    if attention_mask is not None or (causal and T != S):
        from .reference import build_mask

        mask = build_mask(B, T, S, causal=causal, attention_mask=attention_mask, device=q.device)
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
        attn_mask=mask, is_causal=causal and mask is None, scale=scale,
        enable_gqa=k.shape[2] != q.shape[2],
    )
    out = out.transpose(1, 2)
    if mask is not None:  # fully masked rows: SDPA gives NaN, the reference 0
        out = out.masked_fill(~mask.any(-1).transpose(1, 2)[..., None], 0.0)
    return out
