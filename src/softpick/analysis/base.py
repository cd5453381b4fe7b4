"""The accumulator protocol: every metric family of the analysis is one `Metric`.

A metric sees the model's main pass batch by batch and reports JSON summary keys and NPZ arrays:

    m = SomeMetric.from_config(cfg)     # cfg: the merged analysis config (registry.DEFAULT_CFG + user keys)
    with m.capture(model):              # optional forward hooks, active during the main pass only
        m.begin(PassInfo(num_docs, model_config))
        for batch in the main pass:     # model_pass: documents truncated to max_len, batched, padded
            m.observe(batch)
    m.finish(context)                   # optional extra passes (another length, one document)
    m.result() -> dict                  # summary keys, in the order the JSON lists them
    m.arrays() -> dict                  # NPZ arrays
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import torch


def fmt_eps(eps: float) -> str:
    """The JSON key of a threshold: 0.3 -> "0.3", 1e-6 -> "1e-06"."""
    return f"{float(eps):g}"


@dataclass
class PassInfo:
    """What a metric knows before the first batch of a pass."""

    num_docs: int                 # samples of the pass; Batch.idx holds indices in 0..num_docs-1
    model_config: Any = None      # the model's config (None for a bare module)


@dataclass
class Batch:
    """One forward pass of the model over a batch of samples.

    idx: the sample index of each row. ids: [B, T] token ids (CPU). mask: [B, T], 1 = real token,
    0 = padding (CPU); None = every position is real. attentions: one [B, H, T, T] weight tensor per
    layer. hidden_states: the L + 2 hidden states (embedding, each layer's output, final norm) [B, T, C],
    or None when no metric of the pass asked for them.
    """

    idx: Sequence[int]
    ids: torch.Tensor
    mask: torch.Tensor | None
    attentions: Sequence[torch.Tensor]
    hidden_states: Sequence[torch.Tensor] | None = None
    _real: dict = field(default_factory=dict, repr=False)

    def real_values(self, layer: int) -> torch.Tensor:
        """Hidden state `layer` at the real tokens only, [n_real, C] (computed once per batch)."""
        if layer not in self._real:
            h = self.hidden_states[layer].detach()
            self._real[layer] = h.reshape(-1, h.shape[-1]) if self.mask is None else h[self.mask.to(h.device).bool()]
        return self._real[layer]


class Metric:
    """Base class of the accumulators; subclasses override what they use (every method is optional)."""

    name: ClassVar[str] = ""
    uses_hidden_states: ClassVar[bool] = False  # the main pass must return hidden states
    arrays_doc: ClassVar[str] = ""              # lines of the NPZ description (registry.ARRAYS_DOC)

    @classmethod
    def from_config(cls, cfg: dict) -> "Metric":
        return cls()

    def capture(self, model) -> contextlib.AbstractContextManager:
        """Hooks on `model` while the main pass runs (none by default)."""
        return contextlib.nullcontext()

    def begin(self, info: PassInfo) -> None:
        pass

    def observe(self, batch: Batch) -> None:
        pass

    def finish(self, context) -> None:
        """After the main pass; `context` is a model_pass.AnalysisContext (extra passes)."""

    def result(self) -> dict:
        return {}

    def arrays(self) -> dict:
        return {}
