"""softmax+1 ("off-by-one"): p_i = e^{x_i} / (1 + sum_j e^{x_j}), a fixed zero logit in the denominator.

The learned-sink formula with b = 0 (stable form there). No fused path: the materialised reference.
"""
from __future__ import annotations

import torch

from .base import AttentionKind
from .learned_sink import softmax_with_sink


class SoftmaxPlusOne(AttentionKind):
    name = "softmax_plus_one"
    label = "softmax+1"
    color = "#CC79A7"  # reddish purple
    formula = "e^{x_i} / (1 + Σ_j e^{x_j})"

    def weights(self, scores, mask, params):
        return softmax_with_sink(scores, mask, torch.zeros((), dtype=scores.dtype, device=scores.device))


KIND = SoftmaxPlusOne()
