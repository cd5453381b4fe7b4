"""gated attention (Qiu et al. 2025, "G1"): softmax attention whose output is multiplied, per head and
elementwise, by sigmoid(x W_g), x the layer's (normed) input and W_g [hidden, H * D] without bias.

The elementwise, head-specific gate after SDPA is the form Qiu et al. found best (also the one Qwen3-Next
ships); a headwise gate would be one scalar per head. The weights are softmax's (what the sink
analysis reads); the fast path is torch SDPA followed by the gate.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..reference import softmax_weights
from .base import AttentionKind, KindParameters


class OutputGate(KindParameters):
    def __init__(self, hidden_size: int, num_heads: int, head_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, num_heads * head_dim, bias=False)  # initialised as every nn.Linear


class Gated(AttentionKind):
    name = "gated"
    label = "gated attention"
    color = "#009E73"  # bluish green
    formula = "softmax attention ⊙ sigmoid(x W_g) (elementwise, per head)"
    sdpa = True
    needs_layer_input = True

    def make_params(self, config) -> OutputGate:
        return OutputGate(config.hidden_size, config.num_attention_heads, config.head_dim)

    def weights(self, scores, mask, params):
        return softmax_weights(scores, mask)

    def finish(self, out, params, layer_input):
        gate = torch.sigmoid(params.gate_proj(layer_input)).view(out.shape)
        return (out * gate).to(out.dtype)


KIND = Gated()
