"""softmax (the baseline): p_i = e^{x_i} / sum_j e^{x_j}; fully masked rows give 0. Fast path: torch SDPA."""
from __future__ import annotations

from ..reference import softmax_weights
from .base import AttentionKind


class Softmax(AttentionKind):
    name = "softmax"
    label = "softmax"
    color = "#D55E00"  # vermillion
    formula = "e^{x_i} / Σ_j e^{x_j}"
    sdpa = True

    def weights(self, scores, mask, params):
        return softmax_weights(scores, mask)


KIND = Softmax()
