"""Attention sparsity: the fraction of the entries of the causal lower triangle (diagonal included,
padded queries and keys excluded) that are exactly zero; a second figure counts |a| <= zero_threshold
(1e-5) as zero."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .base import Batch, Metric, PassInfo


@dataclass
class SparsityCounts:
    """Counts over the causal lower triangle (diagonal included, padding excluded).

    total: number of entries counted; zero: entries exactly 0; below: entries with
    |a| <= threshold. Counts add across batches / layers (`+`); percentages via properties.
    """

    total: int = 0
    zero: int = 0
    below: int = 0
    threshold: float = 0.0

    def __add__(self, other: "SparsityCounts") -> "SparsityCounts":
        if self.total and other.total and self.threshold != other.threshold:
            raise ValueError("cannot add sparsity counts of different thresholds")
        thr = other.threshold if not self.total else self.threshold
        return SparsityCounts(self.total + other.total, self.zero + other.zero, self.below + other.below, thr)

    @property
    def zero_pct(self) -> float:
        return 100.0 * self.zero / self.total if self.total else float("nan")

    @property
    def below_pct(self) -> float:
        return 100.0 * self.below / self.total if self.total else float("nan")


def attention_sparsity(
    attn: torch.Tensor, valid_mask: torch.Tensor | None = None, threshold: float = 0.0
) -> SparsityCounts:
    """Zero counts of attention weights over the causal lower triangle, padding excluded.

    the paper's notes, "Sparsity: fraction of entries of the causal lower triangle (diagonal included,
    padding excluded) that are exactly zero; a second figure counts |a| <= 1e-5 as zero."

    attn: [B, H, T, T] (or [B, H, T, S] with the causal diagonal aligned to the last key, as
    in the model); valid_mask: [B, T] (S == T) token mask, 1 = real. An entry (t, s) counts
    when s <= t and both query t and key s are real tokens. Returns `SparsityCounts` with
    `zero` (exact zeros) and `below` (|a| <= threshold; equals `zero` for threshold 0).
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be [B, H, T, S], got {tuple(attn.shape)}")
    B, H, T, S = attn.shape
    t = torch.arange(T, device=attn.device)[:, None] + (S - T)
    s = torch.arange(S, device=attn.device)[None, :]
    region = (s <= t)[None]  # [1, T, S]
    if valid_mask is not None:
        if valid_mask.shape != (B, S) or S != T:
            raise ValueError(f"valid_mask must be [B, T] = [{B}, {T}] with T == S, got {tuple(valid_mask.shape)}")
        v = valid_mask.to(device=attn.device).bool()
        region = region & v[:, :, None] & v[:, None, :]  # [B, T, S]
    region = region.expand(B, T, S)
    n_per_head = int(region.sum())
    a = attn.abs()
    r = region[:, None]  # [B, 1, T, S]
    zero = int(((a == 0) & r).sum())
    below = int(((a <= threshold) & r).sum()) if threshold > 0 else zero
    return SparsityCounts(total=n_per_head * H, zero=zero, below=below, threshold=float(threshold))


class Sparsity(Metric):
    """Exact-zero and below-threshold shares of the attention weights, overall and per layer."""

    name = "sparsity"
    arrays_doc = """\
  sparsity_per_layer_zero_pct / _le_threshold_pct  [L]
"""

    def __init__(self, threshold: float = 1e-5):
        self.threshold = float(threshold)
        self.per_layer: list[SparsityCounts] = []

    @classmethod
    def from_config(cls, cfg: dict) -> "Sparsity":
        return cls(cfg["zero_threshold"])

    def begin(self, info: PassInfo) -> None:
        self.per_layer = []

    def observe(self, batch: Batch) -> None:
        attns = batch.attentions
        if not self.per_layer:
            self.per_layer = [SparsityCounts(threshold=self.threshold) for _ in attns]
        mask = None if batch.mask is None else batch.mask.to(attns[0].device)
        for l, a in enumerate(attns):
            self.per_layer[l] = self.per_layer[l] + attention_sparsity(a, mask, self.threshold)

    def result(self) -> dict:
        tot = sum(self.per_layer, SparsityCounts())
        return {
            "sparsity": {"exact_zero_pct": tot.zero_pct, "le_threshold_pct": tot.below_pct,
                         "threshold": tot.threshold, "entries": tot.total},
            "sparsity_per_layer": {"exact_zero_pct": [c.zero_pct for c in self.per_layer],
                                   "le_threshold_pct": [c.below_pct for c in self.per_layer]},
        }

    def arrays(self) -> dict:
        per_layer = self.result()["sparsity_per_layer"]
        return {"sparsity_per_layer_zero_pct": np.array(per_layer["exact_zero_pct"]),
                "sparsity_per_layer_le_threshold_pct": np.array(per_layer["le_threshold_pct"])}
