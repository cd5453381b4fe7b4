"""One example document for the figures: its attention maps (top-left crop) and per-channel / per-token
max |h| of every hidden state."""
from __future__ import annotations

import numpy as np
import torch

from .base import Metric
from .model_pass import AnalysisContext


class ExampleDoc(Metric):
    """Document cfg["example_doc"] of the validation split (clamped to the split; its first max_len tokens,
    EOS kept whatever keep_eos says), run alone without padding."""

    name = "example"
    arrays_doc = """\
  attn_example              [L, H, m, m] float32  attention weights of the example doc, top-left crop
  example_tokens            [m] int64            its token ids
  hidden_max_abs_channel    [L+2, C] float32      example doc: max over tokens of |h| per channel
  hidden_max_abs_token      [L+2, T] float32      example doc: max over channels of |h| per token
"""

    def __init__(self, doc: int = 0, map_size: int = 128):
        self.doc, self.map_size = int(doc), int(map_size)
        self.summary: dict = {}
        self._arrays: dict = {}

    @classmethod
    def from_config(cls, cfg: dict) -> "ExampleDoc":
        return cls(cfg["example_doc"], cfg["map_size"])

    def finish(self, context: AnalysisContext) -> None:
        offsets = np.asarray(context.offsets, dtype=np.int64)
        ex = min(max(self.doc, 0), len(offsets) - 2)
        doc = np.asarray(context.tokens[offsets[ex]:offsets[ex + 1]], dtype=np.int64)[:context.max_len]
        ids = torch.from_numpy(doc)[None]
        out = context.forward(ids, hidden=True)
        m = min(self.map_size, ids.shape[1])
        self.summary = {"example_doc": ex, "example_len": int(ids.shape[1])}
        self._arrays = {
            "attn_example": torch.stack([a[0, :, :m, :m] for a in out.attentions]).float().cpu().numpy(),  # [L, H, m, m]
            "example_tokens": doc[:m],
            "hidden_max_abs_channel": torch.stack([h[0].abs().amax(dim=0) for h in out.hidden_states]).float().cpu().numpy(),
            "hidden_max_abs_token": torch.stack([h[0].abs().amax(dim=-1) for h in out.hidden_states]).float().cpu().numpy(),
        }

    def result(self) -> dict:
        return dict(self.summary)

    def arrays(self) -> dict:
        return dict(self._arrays)
