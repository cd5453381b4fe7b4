"""Box-plot statistics per hidden state (the paper's Fig. 4).

Quartiles and 1.5 IQR whiskers of the values, from a uniform sample of `box_sample_size` values per
hidden state (every value when the population fits, i.e. exact), beside the exact min / max (moments).
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Batch, Metric, PassInfo

BOX_WHIS = 1.5  # whiskers reach the most extreme value within 1.5 IQR of the box (matplotlib / seaborn)


def box_stats(values, whis: float = BOX_WHIS) -> dict:
    """Tukey box-plot statistics of `values` in float64 (NaN dropped), as matplotlib / seaborn draw them.

    q1 / median / q3: numpy's default (linear) quantiles; whisker_lo / whisker_hi: the most extreme
    values within [q1 - whis * IQR, q3 + whis * IQR] (or q1 / q3 where that lies inside the box, as
    matplotlib.cbook.boxplot_stats does); outliers: values outside the whiskers
    (`outlier_pct` in %, `n` values).
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        return {k: float("nan") for k in ("q1", "median", "q3", "whisker_lo", "whisker_hi", "outlier_pct")} | {"n": 0}
    q1, med, q3 = (float(v) for v in np.quantile(x, [0.25, 0.5, 0.75]))
    iqr = q3 - q1
    lo_fence, hi_fence = q1 - whis * iqr, q3 + whis * iqr
    inside = x[(x >= lo_fence) & (x <= hi_fence)]
    # matplotlib's rule (seaborn draws through it): a whisker never ends inside the box
    lo, hi = min(float(inside.min()), q1), max(float(inside.max()), q3)
    out = np.count_nonzero((x < lo) | (x > hi))
    return {"q1": q1, "median": med, "q3": q3, "whisker_lo": lo, "whisker_hi": hi,
            "outlier_pct": float(100.0 * out / x.size), "n": int(x.size)}


class ValueSample:
    """A uniform sample without replacement of at most `size` values from a stream of tensors.

    Every value gets a random key; the `size` smallest keys are kept. While the stream holds at
    most `size` values every one is kept (the statistics are then exact and independent of the
    batching); beyond, the sample is uniform (and depends on the seed and batch order).
    """

    def __init__(self, size: int, seed: int = 0):
        if size < 1:
            raise ValueError(f"sample size must be >= 1, got {size}")
        self.size = int(size)
        self.population = 0
        self._gen = torch.Generator().manual_seed(int(seed))
        self.values = np.zeros(0, dtype=np.float32)
        self._keys = np.zeros(0, dtype=np.float64)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1)
        n = x.numel()
        if n == 0:
            return
        self.population += n
        keys = torch.rand(n, generator=self._gen, dtype=torch.float64)
        if n > self.size:  # reduce on the tensor's device before moving to the CPU
            top = torch.topk(keys, self.size, largest=False)
            keys, x = top.values, x[top.indices.to(x.device)]
        vals = x.float().cpu().numpy()
        allv, allk = np.concatenate([self.values, vals]), np.concatenate([self._keys, keys.numpy()])
        if allv.size > self.size:
            keep = np.argpartition(allk, self.size - 1)[: self.size]
            keep.sort()
            allv, allk = allv[keep], allk[keep]
        self.values, self._keys = allv, allk

    @property
    def exact(self) -> bool:
        return self.population <= self.size


def box_summary(samples: list[ValueSample]) -> dict:
    """Box-plot statistics of every hidden state's sample, as lists over hidden states."""
    stats = [box_stats(smp.values) for smp in samples]
    out = {k: [st[k] for st in stats] for k in ("whisker_lo", "q1", "median", "q3", "whisker_hi", "outlier_pct")}
    out.update(whis=BOX_WHIS, sample_size=[st["n"] for st in stats], population=[smp.population for smp in samples],
               exact=[smp.exact for smp in samples])
    return out


def padded_samples(samples: list[ValueSample]) -> np.ndarray:
    """[S, k] float32: each hidden state's sample, NaN-padded to the longest."""
    k = max(len(smp.values) for smp in samples)
    out = np.full((len(samples), k), np.nan, dtype=np.float32)
    for i, smp in enumerate(samples):
        out[i, : len(smp.values)] = smp.values
    return out


class BoxStats(Metric):
    """A uniform sample of each hidden state's real values (seed box_seed + state index) and its box plot."""

    name = "box"
    uses_hidden_states = True
    arrays_doc = """\
  hidden_sample             [L+2, k] float32      uniform sample of each hidden state's values (all of them when they fit;
                                                 NaN pad), the population of the box plots (summary "hidden_box")
"""

    def __init__(self, sample_size: int = 20000, seed: int = 0):
        self.sample_size, self.seed = int(sample_size), int(seed)
        self.samples: list[ValueSample] = []

    @classmethod
    def from_config(cls, cfg: dict) -> "BoxStats":
        return cls(cfg["box_sample_size"], cfg["box_seed"])

    def begin(self, info: PassInfo) -> None:
        self.samples = []

    def observe(self, batch: Batch) -> None:
        if not self.samples:
            self.samples = [ValueSample(self.sample_size, self.seed + l) for l in range(len(batch.hidden_states))]
        for l, smp in enumerate(self.samples):
            smp.add(batch.real_values(l))

    def result(self) -> dict:
        return {"hidden_box": box_summary(self.samples)}

    def arrays(self) -> dict:
        return {"hidden_sample": padded_samples(self.samples)}
