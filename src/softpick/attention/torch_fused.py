"""Softpick weights as one autograd.Function: the CPU / fallback training path.

Same numbers as reference.softpick_weights, with a hand-written backward (the paper's formula)
that saves the masked scores and two per-row numbers instead of autograd's chain of
intermediates. Masked scores are set to exactly 0: with m = max(0, rowmax) >= 0 such an entry
gives e^{0-m} - e^{-m} = 0, so it adds nothing to the denominator and gets no gradient.
"""
from __future__ import annotations

import torch

from .reference import EPS


class _SoftpickWeights(torch.autograd.Function):
    @staticmethod
    def forward(ctx, scores: torch.Tensor, mask: torch.Tensor | None, eps: float) -> torch.Tensor:
        s = scores if mask is None else scores.masked_fill(~mask, 0.0)
        m = s.amax(dim=-1, keepdim=True).clamp_min(0.0)
        base = torch.exp(-m)
        diff = torch.exp(s - m).sub_(base)
        den = diff.abs().sum(dim=-1, keepdim=True).add_(eps * base)
        p = diff.clamp_min_(0.0).div_(den)
        ctx.save_for_backward(s, m, den, p)
        return p

    @staticmethod
    def backward(ctx, dp: torch.Tensor):
        s, m, den, p = ctx.saved_tensors
        # ds = (e^{s-m} / den) * ([s > 0] dp - sign(s) * delta),  delta = sum_j p_j dp_j
        delta = (p * dp).sum(dim=-1, keepdim=True)
        ds = torch.where(s > 0, dp - delta, delta * (s < 0))  # sign(s) = -1 below 0, 0 at exactly 0
        ds = ds.mul_(torch.exp(s - m).div_(den))
        return ds, None, None


def softpick_weights_fused(scores: torch.Tensor, mask: torch.Tensor | None, eps: float = EPS) -> torch.Tensor:
    return _SoftpickWeights.apply(scores, mask, eps)
