"""Massive activations: the k largest |x| of each hidden state over all documents, with where they occur
(document, position, channel, token id)."""
from __future__ import annotations

import numpy as np
import torch

from .base import Batch, Metric, PassInfo


class TopKValues:
    """Running top-k largest |x| of one hidden state with (doc, token, channel, token id) positions."""

    def __init__(self, k: int):
        self.k = k
        self.val = np.zeros(0)
        self.pos = np.zeros((0, 4), dtype=np.int64)  # doc, token position, channel, token id

    def add(self, h: torch.Tensor, mask: torch.Tensor, idx, ids: torch.Tensor):
        """h [B, T, C] (padding excluded by mask [B, T]); idx: the doc of each row; ids [B, T] (CPU)."""
        B, T, C = h.shape
        a = h.detach().abs().float().masked_fill(~mask.bool()[:, :, None], -1.0).reshape(-1)
        k = min(self.k, a.numel())
        top = torch.topk(a, k)
        keep = top.values >= 0
        flat = top.indices[keep].cpu()
        vals = h.detach().reshape(-1)[top.indices[keep]].double().cpu().numpy()
        b, rem = flat // (T * C), flat % (T * C)
        t, c = rem // C, rem % C
        pos = np.stack([np.asarray(idx)[b.numpy()], t.numpy(), c.numpy(), ids[b, t].numpy()], axis=1)
        allv = np.concatenate([self.val, vals])
        allp = np.concatenate([self.pos, pos.astype(np.int64)])
        order = np.argsort(-np.abs(allv), kind="stable")[: self.k]
        self.val, self.pos = allv[order], allp[order]

    def arrays(self):
        """(values [k] float64, NaN pad; positions [k, 4] int64, -1 pad)."""
        v = np.full(self.k, np.nan)
        p = np.full((self.k, 4), -1, dtype=np.int64)
        v[: len(self.val)] = self.val
        p[: len(self.pos)] = self.pos
        return v, p


class TopK(Metric):
    name = "topk"
    uses_hidden_states = True
    arrays_doc = """\
  topk_values               [L+2, k] float64      the k largest-|x| hidden values over all docs (signed; NaN pad)
  topk_doc / topk_position / topk_channel / topk_token_id  [L+2, k] int64 where they occur (-1 pad)
"""

    def __init__(self, k: int = 16):
        self.k = int(k)
        self.per_state: list[TopKValues] = []

    @classmethod
    def from_config(cls, cfg: dict) -> "TopK":
        return cls(cfg["topk"])

    def begin(self, info: PassInfo) -> None:
        self.per_state = []

    def observe(self, batch: Batch) -> None:
        hs = batch.hidden_states
        if not self.per_state:
            self.per_state = [TopKValues(self.k) for _ in hs]
        for top, h in zip(self.per_state, hs):
            mask = torch.ones(h.shape[:2], dtype=torch.long) if batch.mask is None else batch.mask
            top.add(h, mask.to(h.device), batch.idx, batch.ids)

    def arrays(self) -> dict:
        values, positions = zip(*(t.arrays() for t in self.per_state))
        positions = np.stack(positions)
        return {"topk_values": np.stack(values), "topk_doc": positions[..., 0], "topk_position": positions[..., 1],
                "topk_channel": positions[..., 2], "topk_token_id": positions[..., 3]}
