"""learned sink (GPT-OSS): a learned logit b_h per head joins the softmax denominator only,
p_i = e^{x_i} / (e^{b_h} + sum_j e^{x_j}). Weights sum to less than one; the sink carries no value.

Stable form with m = max(b_h, rowmax): e^{x_i - m} / (e^{b_h - m} + sum_j e^{x_j - m}); the
denominator is >= 1 term of size 1, so fully masked rows give 0 and nothing overflows. b_h starts at
0 (then it equals softmax+1). No fused path: the materialised reference.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .base import AttentionKind, KindParameters, masked_scores, per_head


def softmax_with_sink(scores: torch.Tensor, mask: torch.Tensor | None, sink: torch.Tensor) -> torch.Tensor:
    """e^{x_i} / (e^{sink} + sum_j e^{x_j}); `sink` broadcasts against [B, H, T, 1]."""
    s = masked_scores(scores, mask)
    m = torch.maximum(s.amax(dim=-1, keepdim=True), sink).detach()
    e = torch.exp(s - m)
    return e / (torch.exp(sink - m) + e.sum(dim=-1, keepdim=True))


class SinkLogits(KindParameters):
    def __init__(self, num_heads: int):
        super().__init__()
        self.sink_logits = nn.Parameter(torch.zeros(num_heads))

    def init_weights(self, std: float) -> None:  # noqa: ARG002
        with torch.no_grad():
            self.sink_logits.zero_()


class LearnedSink(AttentionKind):
    name = "learned_sink"
    label = "learned sink (GPT-OSS)"
    color = "#999999"  # grey
    formula = "e^{x_i} / (e^{b_h} + Σ_j e^{x_j}), b_h learned per head (init 0)"

    def make_params(self, config) -> SinkLogits:
        return SinkLogits(config.num_attention_heads)

    def weights(self, scores, mask, params):
        return softmax_with_sink(scores, mask, per_head(params.sink_logits, scores))


KIND = LearnedSink()
