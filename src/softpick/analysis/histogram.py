"""Histograms of |x| of each hidden state on log-spaced bins (real tokens of all documents)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Batch, Metric, PassInfo

# Log-spaced |x| bin edges of the hidden-state histograms (10 bins per decade, 1e-6 .. 1e5).
# Bin 0 holds |x| < HIST_EDGES[0] (zeros included), bin i holds HIST_EDGES[i-1] <= |x| < HIST_EDGES[i],
# the last bin holds |x| >= HIST_EDGES[-1]: len(HIST_EDGES) + 1 bins.
HIST_EDGES = np.logspace(-6, 5, 111)


class Histogram(Metric):
    name = "histogram"
    uses_hidden_states = True
    arrays_doc = """\
  hist_edges                [E] float64           log-spaced |x| bin edges (HIST_EDGES)
  hist_counts               [L+2, E+1] int64      |x| < e0, [e_{i-1}, e_i), >= e_{E-1}; all docs, padding excluded
"""

    def __init__(self):
        self.counts: np.ndarray | None = None
        self._edges = torch.tensor(HIST_EDGES, dtype=torch.float64)

    def begin(self, info: PassInfo) -> None:
        self.counts = None

    def observe(self, batch: Batch) -> None:
        hs = batch.hidden_states
        if self.counts is None:
            self.counts = np.zeros((len(hs), len(HIST_EDGES) + 1), dtype=np.int64)
        for l in range(len(hs)):
            b = torch.bucketize(batch.real_values(l).abs().double().cpu().reshape(-1), self._edges, right=True)
            self.counts[l] += torch.bincount(b, minlength=len(HIST_EDGES) + 1).numpy()

    def arrays(self) -> dict:
        return {"hist_edges": HIST_EDGES.copy(), "hist_counts": self.counts}
