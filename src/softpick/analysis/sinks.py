"""Sink score and sink rate (Gu et al. 2024).

For layer l, head h and sample n the sink score is the mean over the sample's *valid* (non-padded)
query positions t of the attention weight on key 0 (the BOS token). A (layer, head, sample) triple is
a sink when its score exceeds eps; the sink rate is the percentage of such triples, reported at
eps = 0.2 and 0.3. Every sample counts once (the authors' script divides by the number of batches
instead of batches x batch size -- a bug we do not copy).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import torch

from .base import Batch, Metric, PassInfo, fmt_eps


def sink_scores(attn: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-(sample, head) sink score: mean over valid query positions of the weight on key 0.

    the paper's notes, "Sink rate (Gu et al. 2024)": "for each layer l and head h, the mean over query
    positions t of the attention weight on key 0 (the first/BOS token) ... Exclude padded
    queries."

    attn: [B, H, T, S] attention weights of one layer. query_mask: [B, T], 1/True for real
    tokens, 0/False for padding (None = all valid). Returns float64 [B, H]; a sample without
    any valid query gets NaN (ignored by `sink_rate`).
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be [B, H, T, S], got {tuple(attn.shape)}")
    B, H, T, _ = attn.shape
    col0 = attn[..., 0].to(torch.float64)  # [B, H, T]
    if query_mask is None:
        return col0.mean(dim=-1)
    if query_mask.shape != (B, T):
        raise ValueError(f"query_mask must be [B, T] = [{B}, {T}], got {tuple(query_mask.shape)}")
    m = query_mask.to(device=attn.device, dtype=torch.float64)[:, None, :]  # [B, 1, T]
    n = m.sum(dim=-1)  # [B, 1]
    s = (col0 * m).sum(dim=-1)
    return torch.where(n > 0, s / n.clamp_min(1.0), torch.full_like(s, float("nan")))


def _as_flat_array(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().to("cpu", torch.float64).numpy().ravel()
    if isinstance(scores, np.ndarray):
        return scores.astype(np.float64, copy=False).ravel()
    # a list of per-batch arrays of possibly different sizes
    parts = [_as_flat_array(s) for s in scores]
    return np.concatenate(parts) if parts else np.zeros(0)


def sink_rate(scores, eps: float = 0.3) -> float:
    """Percentage of (layer, head, sample) triples whose sink score exceeds eps.

    the paper's notes: "a head is a sink head when that mean exceeds eps. Report the fraction of
    (layer, head, sample) triples over eps, in %". `scores` holds one sink score per triple
    (any shape, e.g. [L, H, N], or a list of per-batch arrays); each entry is one triple, so
    every sample weighs the same whatever the batch it came in (the denominator is the
    number of triples, i.e. layers x heads x samples, not layers x heads x batches as in the
    authors' buggy script). NaN entries (samples without a valid query) are excluded.
    Returns a float in [0, 100] (NaN if there is no valid triple).
    """
    x = _as_flat_array(scores)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan")
    return float(100.0 * np.count_nonzero(x > eps) / x.size)


def sink_rate_per_layer(scores, eps: float = 0.3) -> list[float]:
    """Sink rate (%, as `sink_rate`) of each layer separately; scores [L, H, N] (or [L, ...])."""
    x = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return [sink_rate(x[l], eps) for l in range(x.shape[0])]


class SinkRate(Metric):
    """Sink scores [L, H, N] of every (layer, head, sample); the sink rate overall and per layer."""

    name = "sinks"
    arrays_doc = """\
  sink_scores               [L, H, N] float32     per (layer, head, doc) sink score
  sink_scores_mean          [L, H] float64        averaged over docs
"""

    def __init__(self, eps: Sequence[float] = (0.2, 0.3)):
        self.eps = [float(e) for e in eps]
        self.num_docs = 0
        self.scores: np.ndarray | None = None  # [L, H, N] float64, NaN until a sample is seen

    @classmethod
    def from_config(cls, cfg: dict) -> "SinkRate":
        return cls(cfg["sink_eps"])

    def begin(self, info: PassInfo) -> None:
        self.num_docs, self.scores = info.num_docs, None

    def observe(self, batch: Batch) -> None:
        attns = batch.attentions
        if self.scores is None:
            self.scores = np.full((len(attns), attns[0].shape[1], self.num_docs), np.nan)
        mask = None if batch.mask is None else batch.mask.to(attns[0].device)
        for l, a in enumerate(attns):
            self.scores[l][:, batch.idx] = sink_scores(a, mask).cpu().numpy().T

    def rates(self) -> dict:
        """{"sink_rate": {eps: %}, "sink_rate_per_layer": {eps: [% per layer]}}."""
        return {"sink_rate": {fmt_eps(e): sink_rate(self.scores, e) for e in self.eps},
                "sink_rate_per_layer": {fmt_eps(e): sink_rate_per_layer(self.scores, e) for e in self.eps}}

    def score_means(self) -> np.ndarray:
        """[L, H] mean sink score over the samples (NaN for a head without any valid sample)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.scores, axis=-1)

    def result(self) -> dict:
        return {"sink_eps": list(self.eps), **self.rates()}

    def arrays(self) -> dict:
        return {"sink_scores": self.scores.astype(np.float32), "sink_scores_mean": self.score_means()}
