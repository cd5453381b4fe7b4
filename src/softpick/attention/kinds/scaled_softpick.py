"""scaled softpick: softpick with the query multiplied, after RoPE, by s_h * log(n).

As in the authors' flame / fla fork (its Attention layer for attn_impl "*scaled_softpick*"): s_h is a
learned scalar per query head initialised to 0.3, and n = p + 2 for a query at absolute position p,
where p counts from the first key (p = S - T + t for query row t, so a KV cache of S - T earlier
tokens gives the same factor as the full sequence). Scores become s_h * log(n) * q.k / sqrt(d).
The weights are softpick's, so the fast path is the softpick path (Triton on CUDA) on the scaled q.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..reference import softpick_weights
from .base import AttentionKind, KindParameters

INIT_SCALE = 0.3  # the authors' initial s_h


class LengthScale(KindParameters):
    def __init__(self, num_heads: int):
        super().__init__()
        self.length_scale = nn.Parameter(torch.full((num_heads,), INIT_SCALE))

    def init_weights(self, std: float) -> None:  # noqa: ARG002
        with torch.no_grad():
            self.length_scale.fill_(INIT_SCALE)


def length_factor(scale: torch.Tensor, num_queries: int, num_keys: int, dtype: torch.dtype) -> torch.Tensor:
    """[T, H, 1]: s_h * log(p + 2) for query positions p = S - T ... S - 1."""
    compute = torch.promote_types(dtype, torch.float32)
    pos = torch.arange(num_keys - num_queries, num_keys, device=scale.device, dtype=compute)
    return (torch.log(pos + 2.0)[:, None] * scale.to(compute)[None, :])[..., None]


class ScaledSoftpick(AttentionKind):
    name = "scaled_softpick"
    label = "scaled softpick"
    color = "#56B4E9"  # sky blue
    formula = "softpick(s_h · log(p + 2) · q·k / √d), s_h learned per head (init 0.3)"
    flash_kernel = "softpick"
    fused_softpick = True

    def make_params(self, config) -> LengthScale:
        return LengthScale(config.num_attention_heads)

    def prepare_query(self, q, params, num_keys):
        factor = length_factor(params.length_scale, q.shape[1], num_keys, q.dtype)
        return (q * factor).to(q.dtype)

    def weights(self, scores, mask, params):
        return softpick_weights(scores, mask)


KIND = ScaledSoftpick()
