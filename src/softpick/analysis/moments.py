"""Hidden-state moments: kurtosis, min, max, max |x| (massive activations).

Every element of every hidden state (embedding output, residual stream after each layer, final
normed output), padding excluded, is pooled into one population; Pearson (non-excess) kurtosis
mu4 / mu2^2 accumulated in float64. Also min, max, max |x|, mean and std, and each hidden state
on its own. `kurtosis_hf_hidden_states` pools what transformers' output_hidden_states returns (the
authors' analysis scripts): the same states without the last layer's un-normed output.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .base import Batch, Metric, PassInfo


@dataclass
class MomentAccumulator:
    """Streaming float64 count, mean, central moment sums M2..M4, min, max of a population.

    Each `update` computes the batch's central moments two-pass in float64 (mean first, then
    sums of powers of deviations), then merges them with the running ones by the pairwise
    formulas of Chan et al. / Pebay (2008). No raw power sums are kept, so a huge mean or
    outliers (massive activations) do not cancel catastrophically.

    `kurtosis` is Pearson's (non-excess) mu4 / mu2^2 = n * M4 / M2^2 (the paper's notes, "Kurtosis").
    """

    n: int = 0
    mean: float = 0.0
    M2: float = 0.0
    M3: float = 0.0
    M4: float = 0.0
    min: float = math.inf
    max: float = -math.inf

    def update(self, x) -> "MomentAccumulator":
        if isinstance(x, torch.Tensor):
            x = x.detach().to(torch.float64).reshape(-1)
            nb = x.numel()
            if nb == 0:
                return self
            mb = float(x.mean())
            d = x - mb
            d2 = d * d
            M2b = float(d2.sum())
            M3b = float((d2 * d).sum())
            M4b = float((d2 * d2).sum())
            lo, hi = float(x.min()), float(x.max())
        else:
            x = np.asarray(x, dtype=np.float64).ravel()
            nb = x.size
            if nb == 0:
                return self
            mb = float(x.mean())
            d = x - mb
            d2 = d * d
            M2b, M3b, M4b = float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum())
            lo, hi = float(x.min()), float(x.max())
        self.merge(MomentAccumulator(nb, mb, M2b, M3b, M4b, lo, hi))
        return self

    def merge(self, o: "MomentAccumulator") -> "MomentAccumulator":
        if o.n == 0:
            return self
        if self.n == 0:
            self.n, self.mean, self.M2, self.M3, self.M4, self.min, self.max = o.n, o.mean, o.M2, o.M3, o.M4, o.min, o.max
            return self
        na, nb = float(self.n), float(o.n)
        n = na + nb
        delta = o.mean - self.mean
        d_n = delta / n
        d_n2 = d_n * d_n
        term1 = delta * d_n * na * nb  # delta^2 na nb / n
        M4 = (self.M4 + o.M4 + term1 * d_n2 * (na * na - na * nb + nb * nb)
              + 6.0 * d_n2 * (na * na * o.M2 + nb * nb * self.M2)
              + 4.0 * d_n * (na * o.M3 - nb * self.M3))
        M3 = (self.M3 + o.M3 + term1 * d_n * (na - nb)
              + 3.0 * d_n * (na * o.M2 - nb * self.M2))
        M2 = self.M2 + o.M2 + term1
        self.mean = self.mean + d_n * nb
        self.M2, self.M3, self.M4 = M2, M3, M4
        self.n = self.n + o.n
        self.min = min(self.min, o.min)
        self.max = max(self.max, o.max)
        return self

    @property
    def variance(self) -> float:
        """Population variance mu2."""
        return self.M2 / self.n if self.n else float("nan")

    @property
    def kurtosis(self) -> float:
        """Pearson (non-excess) kurtosis mu4 / mu2^2 (NaN for an empty or constant population)."""
        if self.n == 0 or self.M2 == 0:
            return float("nan")
        return self.n * self.M4 / (self.M2 * self.M2)

    @property
    def max_abs(self) -> float:
        return max(abs(self.min), abs(self.max)) if self.n else float("nan")

    def as_dict(self) -> dict:
        return {
            "count": int(self.n), "mean": self.mean, "std": math.sqrt(self.variance) if self.n else float("nan"),
            "kurtosis": self.kurtosis, "min": self.min if self.n else float("nan"),
            "max": self.max if self.n else float("nan"), "max_abs": self.max_abs,
        }


def kurtosis(x) -> float:
    """One-shot Pearson (non-excess) kurtosis mu4 / mu2^2 of all elements of x, in float64."""
    return MomentAccumulator().update(x).kurtosis


def hidden_state_names(count: int) -> list[str]:
    """Names of the L + 2 hidden states: embedding, layer 0 .. L-1, final norm."""
    return ["embedding"] + [f"layer {i}" for i in range(count - 2)] + ["final norm"]


class HiddenMoments(Metric):
    """Moments of all hidden values pooled (and of transformers' pool, and of each hidden state)."""

    name = "moments"
    uses_hidden_states = True

    def __init__(self):
        self.begin(None)

    def begin(self, info: PassInfo | None) -> None:
        self.pooled = MomentAccumulator()
        self.pooled_hf = MomentAccumulator()  # transformers' hidden_states: no un-normed last-layer output
        self.per_state: list[MomentAccumulator] = []

    def observe(self, batch: Batch) -> None:
        hs = batch.hidden_states
        if not self.per_state:
            self.per_state = [MomentAccumulator() for _ in hs]
        for l in range(len(hs)):
            lm = MomentAccumulator().update(batch.real_values(l))
            self.per_state[l].merge(lm)
            self.pooled.merge(MomentAccumulator(**vars(lm)))
            if l != len(hs) - 2:
                self.pooled_hf.merge(MomentAccumulator(**vars(lm)))

    def result(self) -> dict:
        md = self.pooled.as_dict()
        return {
            "kurtosis": md["kurtosis"],
            # the authors' pool: transformers' output_hidden_states (embedding, each layer's output but the
            # last, the final normed output), i.e. ours without the last layer's un-normed output
            "kurtosis_hf_hidden_states": self.pooled_hf.kurtosis,
            "min": md["min"],
            "max": md["max"],
            "max_abs": md["max_abs"],
            "mean": md["mean"],
            "std": md["std"],
            "num_hidden_values": md["count"],
            "hidden_state_names": hidden_state_names(len(self.per_state)),
            "per_hidden_state": {k: [lm.as_dict()[k] for lm in self.per_state] for k in ("kurtosis", "min", "max", "max_abs")},
        }
