"""The learning-rate schedule: linear warm-up to the peak, then cosine decay to a floor.

One definition for both trainers: lr_at is the train stage's schedule (train.lr, train.warmup_steps,
train.max_steps, train.min_lr_ratio), softpick.mechanism uses warmup_cosine as a LambdaLR factor (peak 1).
"""
from __future__ import annotations

import math


def warmup_cosine(step: int, peak: float, floor: float, warmup_steps: int, total_steps: int) -> float:
    """peak * (step + 1) / warmup_steps during warm-up, then cosine from peak to floor at total_steps."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))


def lr_at(step: int, cfg: dict) -> float:
    """Linear warm-up to lr over warmup_steps, then cosine to min_lr_ratio * lr at max_steps."""
    lr = cfg["lr"]
    return warmup_cosine(step, lr, cfg.get("min_lr_ratio", 0.1) * lr, cfg["warmup_steps"], cfg["max_steps"])
