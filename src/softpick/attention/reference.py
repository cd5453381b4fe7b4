"""Materialised (naive) attention: the reference every fast path is tested against.

Layout: q [B, T, H, D], k / v [B, S, Hkv, D] with H a multiple of Hkv (GQA / MQA);
output [B, T, H, D]; weights [B, H, T, S].

Softpick (arXiv 2504.20966), with one documented eps:

    softpick(x)_i = ReLU(e^{x_i} - 1) / (sum_j |e^{x_j} - 1| + EPS)

Stable form used here and by the Triton kernel, with the reference point
m = max(0, max_j x_j) taken over the *unmasked* scores of the row (both terms carry e^{-m}):

    num_i = ReLU(e^{x_i - m} - e^{-m})
    den   = sum_{j unmasked} |e^{x_j - m} - e^{-m}|  +  EPS * e^{-m}
    p_i   = num_i / den

EPS sits in the unscaled denominator (the authors' code adds it after rescaling, which makes
the value depend on m); so p does not depend on m at all, m can be a constant for autograd,
and the paper's gradient is exact: with D = sum_j |e^{s_j} - 1| + EPS, dp = dO V^T and
delta = rowsum(O * dO),  ds_k = (e^{s_k} / D) * ([s_k > 0] dp_k - sign(s_k) delta).
Clamping m at 0 keeps e^{-m} <= 1, so rows whose scores are all very negative (or all
masked) give p = 0 and finite gradients. Masked entries add exactly 0 to the denominator
(setting them to -inf is not enough, see softpick_weights below).
"""
from __future__ import annotations

import math

import torch

EPS = 1e-6  # added to the unscaled softpick denominator (see above); the Triton kernel uses the same value


def _scores(q: torch.Tensor, k: torch.Tensor, scale: float | None) -> torch.Tensor:
    B, T, H, D = q.shape
    Hkv = k.shape[2]
    if H % Hkv:
        raise ValueError(f"query heads ({H}) must be a multiple of key/value heads ({Hkv})")
    if scale is None:
        scale = 1.0 / math.sqrt(D)
    if Hkv != H:
        k = k.repeat_interleave(H // Hkv, dim=2)
    return torch.einsum("bthd,bshd->bhts", q, k) * scale


def build_mask(
    B: int, T: int, S: int, *, causal: bool, attention_mask: torch.Tensor | None, device
) -> torch.Tensor | None:
    """Boolean [B, 1, T, S] mask, True where a query may attend. None means no masking.

    Causal masking aligns the last query with the last key (offset S - T), as for decoding
    with a cache. attention_mask is [B, S] with 1 for real tokens and 0 for padding.
    """
    mask = None
    if causal:
        t = torch.arange(T, device=device)[:, None] + (S - T)
        s = torch.arange(S, device=device)[None, :]
        mask = (s <= t)[None, None]
    if attention_mask is not None:
        if attention_mask.shape != (B, S):
            raise ValueError(f"attention_mask must be [B, S] = [{B}, {S}], got {tuple(attention_mask.shape)}")
        pad = attention_mask.bool()[:, None, None, :]
        mask = pad if mask is None else mask & pad
    return mask


def softpick_weights(scores: torch.Tensor, mask: torch.Tensor | None, eps: float = EPS) -> torch.Tensor:
    """Softpick over the last dim of `scores`; masked entries get weight 0 and add 0 to the denominator."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True).clamp_min(0.0).detach()
    shifted = torch.exp(scores - m)  # masked -> exp(-inf) = 0
    base = torch.exp(-m)
    diff = shifted - base
    if mask is not None:
        diff = diff.masked_fill(~mask, 0.0)
    num = torch.relu(diff)
    den = diff.abs().sum(dim=-1, keepdim=True) + eps * base
    return num / den


def softmax_weights(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Softmax over the last dim; fully masked rows give all-zero weights (not NaN)."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    scores = scores.masked_fill(~mask, float("-inf"))
    m = scores.amax(dim=-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    e = torch.exp(scores - m)
    den = e.sum(dim=-1, keepdim=True)
    return e / torch.where(den > 0, den, torch.ones_like(den))


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    kind: str = "softpick",
    causal: bool = True,
    attention_mask: torch.Tensor | None = None,
    scale: float | None = None,
    eps: float = EPS,
    weights_fn=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Materialised attention. Returns (out [B, T, H, D], weights [B, H, T, S]).

    Computed in float32 at least (float64 stays float64); the output takes q's dtype.
    weights_fn(scores, mask) replaces the weight function of `kind` (the fused torch path uses it).
    """
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    if k.shape != v.shape[:3] + (k.shape[3],) or v.shape[:3] != (B, S, Hkv):
        raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must share [B, S, Hkv]")
    if weights_fn is None:
        if kind == "softpick":
            weights_fn = lambda s, m: softpick_weights(s, m, eps)  # noqa: E731
        elif kind == "softmax":
            weights_fn = softmax_weights
        else:
            raise ValueError(f"unknown attention kind {kind!r}; expected 'softmax' or 'softpick'")
    compute = torch.promote_types(q.dtype, torch.float32)
    scores = _scores(q.to(compute), k.to(compute), scale)
    w = weights_fn(scores, build_mask(B, T, S, causal=causal, attention_mask=attention_mask, device=q.device))
    vv = v.to(compute)
    if Hkv != H:
        vv = vv.repeat_interleave(H // Hkv, dim=2)
    out = torch.einsum("bhts,bshd->bthd", w, vv)
    return out.to(q.dtype), w
