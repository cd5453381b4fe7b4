"""Dead heads (the paper's v4 section 7.2).

A head is dead when the max over its channels of |head output| (the attention output before o_proj,
captured by a forward pre-hook on o_proj) is < eps on >= `dead_head_token_fraction` (95%) of the real
tokens; reported as % of all (layer, head) pairs and per layer, at each eps of `dead_head_eps`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .base import Batch, Metric, PassInfo, fmt_eps


def head_output_max_abs(out: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per (sample, token, head) max over the head's channels of |output|, in the output's dtype.

    out: the attention output before o_proj, [B, T, H * D] (o_proj's input) or [B, T, H, D].
    Returns [B, T, H].
    """
    if out.dim() == 3:
        B, T, HD = out.shape
        if HD % num_heads:
            raise ValueError(f"last dim {HD} is not divisible by num_heads {num_heads}")
        out = out.reshape(B, T, num_heads, HD // num_heads)
    if out.dim() != 4 or out.shape[2] != num_heads:
        raise ValueError(f"head output must be [B, T, H*D] or [B, T, H, D] with H = {num_heads}, got {tuple(out.shape)}")
    return out.detach().abs().amax(dim=-1)


@dataclass
class DeadHeadCounts:
    """Per (layer, head) counts of real tokens on which the head is inactive (max |output| < eps).

    `add(layer, max_abs [B, T, H], mask [B, T])` counts one batch of one layer (padded tokens
    excluded); counts add up across batches. `inactive_fraction()` is [E, L, H]; a head is dead
    where that fraction is >= token_fraction (the paper's notes: "max |output| < 1e-6 on >= 95% of tokens").
    """

    eps: Sequence[float]
    num_layers: int
    num_heads: int
    token_fraction: float = 0.95
    inactive: np.ndarray | None = None  # [E, L, H] int64
    tokens: np.ndarray | None = None    # [L] int64 real tokens counted per layer

    def __post_init__(self):
        self.eps = [float(e) for e in self.eps]
        if self.inactive is None:
            self.inactive = np.zeros((len(self.eps), self.num_layers, self.num_heads), dtype=np.int64)
        if self.tokens is None:
            self.tokens = np.zeros(self.num_layers, dtype=np.int64)

    def add(self, layer: int, max_abs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        B, T, H = max_abs.shape
        if H != self.num_heads:
            raise ValueError(f"expected {self.num_heads} heads, got {H}")
        valid = (torch.ones(B, T, dtype=torch.bool, device=max_abs.device) if mask is None
                 else mask.to(max_abs.device).bool())
        m = max_abs[valid].double()  # [n_valid, H]; compared with eps in float64 (eps need not be a float32)
        for i, e in enumerate(self.eps):
            self.inactive[i, layer] += (m < e).sum(dim=0).cpu().numpy().astype(np.int64)
        self.tokens[layer] += int(valid.sum())

    def inactive_fraction(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.inactive / self.tokens[None, :, None].astype(np.float64)

    def dead(self) -> np.ndarray:
        """[E, L, H] bool: inactive on at least token_fraction of the tokens."""
        return self.inactive_fraction() >= self.token_fraction

    def summary(self) -> dict:
        dead = self.dead()
        return {
            "eps": list(self.eps),
            "token_fraction": float(self.token_fraction),
            "num_tokens": int(self.tokens[0]) if self.num_layers else 0,
            "num_heads_total": int(self.num_layers * self.num_heads),
            "count": {fmt_eps(e): int(dead[i].sum()) for i, e in enumerate(self.eps)},
            "pct": {fmt_eps(e): float(100.0 * dead[i].mean()) for i, e in enumerate(self.eps)},
            "pct_per_layer": {fmt_eps(e): [float(100.0 * x) for x in dead[i].mean(axis=1)]
                              for i, e in enumerate(self.eps)},
        }


def o_proj_modules(model) -> list:
    """The o_proj Linear of every attention layer, in layer order (empty if the model has none)."""
    return [m for name, m in model.named_modules() if name.endswith("self_attn.o_proj")]


class DeadHeads(Metric):
    """Per (layer, head) share of real tokens with max |head output| < eps; heads dead at each eps.

    The head outputs come from forward pre-hooks on o_proj (the model's code is unchanged); a model
    without `self_attn.o_proj` modules or without config.num_attention_heads reports None."""

    name = "dead_heads"
    arrays_doc = """\
  dead_head_eps             [E] float64           dead-head thresholds (if the model has self_attn.o_proj modules)
  dead_head_inactive_fraction [E, L, H] float64   fraction of real tokens with max |head output| < eps
"""

    def __init__(self, eps: Sequence[float] = (1e-6, 1e-2), token_fraction: float = 0.95):
        self.eps = [float(e) for e in eps]
        self.token_fraction = float(token_fraction)
        self.counts: DeadHeadCounts | None = None
        self._num_layers = 0
        self._num_heads = 0
        self._seen: list = []  # (layer, [B, T, H]) of the running forward

    @classmethod
    def from_config(cls, cfg: dict) -> "DeadHeads":
        return cls(cfg["dead_head_eps"], cfg["dead_head_token_fraction"])

    @contextlib.contextmanager
    def capture(self, model):
        num_heads = getattr(getattr(model, "config", None), "num_attention_heads", None)
        handles = []
        if num_heads:
            for layer, mod in enumerate(o_proj_modules(model)):
                def hook(_mod, args, layer=layer):
                    self._seen.append((layer, head_output_max_abs(args[0], num_heads)))
                handles.append(mod.register_forward_pre_hook(hook))
        self._num_layers, self._num_heads = len(handles), num_heads or 0
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            self._seen.clear()

    def begin(self, info: PassInfo) -> None:
        self.counts = None
        if self._num_layers:
            self.counts = DeadHeadCounts(self.eps, self._num_layers, self._num_heads, self.token_fraction)

    def observe(self, batch: Batch) -> None:
        if self.counts is not None:
            for layer, m in self._seen:
                self.counts.add(layer, m, batch.mask)
        self._seen.clear()

    def result(self) -> dict:
        return {"dead_heads": self.counts.summary() if self.counts is not None else None}

    def arrays(self) -> dict:
        if self.counts is None:
            return {}
        return {"dead_head_eps": np.array(self.counts.eps), "dead_head_inactive_fraction": self.counts.inactive_fraction()}
