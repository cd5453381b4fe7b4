"""Softpick flash attention in Triton (forward and FlashAttention-2 style backward).

Layout: q [B, T, H, D], k / v [B, S, Hkv, D] (GQA / MQA: H a multiple of Hkv), out [B, T, H, D];
variable-length packed documents with cu_seqlens ([N + 1] offsets, B = 1, as in fla / FlashAttention).
Side by side, as in fla: reference.py (the materialised float reference, one level up),
kernels.py (the Triton kernels) and ops.py (launchers, configs, torch.library custom ops
with autograd and fake impls, so torch.compile traces through without a graph break).
"""
from .ops import flash_bwd, flash_fwd, softpick_flash_attention

__all__ = ["softpick_flash_attention", "flash_fwd", "flash_bwd"]
