"""ReLU softmax: p_i = ReLU(e^{x_i} - 1) / (sum_j ReLU(e^{x_j} - 1) + EPS).

Softpick with the denominator's |e^x - 1| replaced by ReLU(e^x - 1): negative scores get weight 0 and
add nothing, so the weights sum to one over the positive scores (0 when there are none). This is the
authors' "relu_softpick_1" (fla fork, fla/ops/attn/naive_relusoftpick.py), listed as "ReluSoftpick1"
in their results tables in the same slot as the paper's "ReLU softmax". The paper's text does not
spell the formula out; we follow their code. Stable form with m = max(0, rowmax) and the same EPS in
the unscaled denominator as softpick (their code adds 1e-8 after rescaling). No fused path.
"""
from __future__ import annotations

import torch

from ..reference import EPS
from .base import AttentionKind, masked_scores


def relu_softmax_weights(scores: torch.Tensor, mask: torch.Tensor | None, eps: float = EPS) -> torch.Tensor:
    s = masked_scores(scores, mask)
    m = s.amax(dim=-1, keepdim=True).clamp_min(0.0).detach()
    base = torch.exp(-m)
    num = torch.relu(torch.exp(s - m) - base)  # masked: exp(-inf) - base < 0 -> 0
    return num / (num.sum(dim=-1, keepdim=True) + eps * base)


class ReluSoftmax(AttentionKind):
    name = "relu_softmax"
    label = "ReLU softmax"
    color = "#000000"  # black
    formula = "ReLU(e^{x_i} − 1) / (Σ_j ReLU(e^{x_j} − 1) + ε)"

    def weights(self, scores, mask, params):
        return relu_softmax_weights(scores, mask)


KIND = ReluSoftmax()
