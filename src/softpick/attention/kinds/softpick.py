"""softpick (the paper): p_i = ReLU(e^{x_i} - 1) / (sum_j |e^{x_j} - 1| + EPS), stable form in reference.py.
Fast paths: the Triton flash kernel on CUDA, the fused autograd function on CPU."""
from __future__ import annotations

from ..reference import softpick_weights
from .base import AttentionKind


class Softpick(AttentionKind):
    name = "softpick"
    label = "softpick"
    color = "#0072B2"  # blue
    formula = "ReLU(e^{x_i} − 1) / (Σ_j |e^{x_j} − 1| + ε)"
    flash_kernel = "softpick"
    fused_softpick = True

    def weights(self, scores, mask, params):
        return softpick_weights(scores, mask)


KIND = Softpick()
