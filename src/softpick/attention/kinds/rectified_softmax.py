"""rectified-only softmax: softmax over the positive scores only, p_i = [x_i > 0] e^{x_i} / sum_j [x_j > 0] e^{x_j}.

Negative scores are set to -inf before the softmax (the paper, Table 3); a row without a positive score
gives weight 0 everywhere (output 0). The authors' naive code keeps x >= 0; the two differ only on
scores exactly 0. No fused path: the materialised reference.
"""
from __future__ import annotations

from ..reference import softmax_weights
from .base import AttentionKind


class RectifiedSoftmax(AttentionKind):
    name = "rectified_softmax"
    label = "rectified-only softmax"
    color = "#E69F00"  # orange
    formula = "[x_i > 0] e^{x_i} / Σ_j [x_j > 0] e^{x_j}"

    def weights(self, scores, mask, params):
        positive = scores > 0
        return softmax_weights(scores, positive if mask is None else mask & positive)


KIND = RectifiedSoftmax()
