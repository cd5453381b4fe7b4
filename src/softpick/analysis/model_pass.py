"""The forward passes of the analysis: documents truncated to a length, batched by length (right padding
+ attention_mask), run under torch.no_grad with attention weights (and hidden states where a metric
asks), each batch handed to every accumulator."""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .base import Batch, Metric, PassInfo


def load_docs(tokens: np.ndarray, offsets: np.ndarray, num_docs: int | None) -> list[np.ndarray]:
    """The first `num_docs` documents (each [BOS] + ids + [EOS]) as int64 arrays."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1 if num_docs is None else min(int(num_docs), len(offsets) - 1)
    return [np.asarray(tokens[offsets[i]:offsets[i + 1]], dtype=np.int64) for i in range(n)]


def batches(docs: Sequence[np.ndarray], max_len: int, batch_size: int, pad_id: int):
    """Yield (doc indices, input_ids [B, T], attention_mask [B, T]); docs sorted by length."""
    lens = np.array([min(len(d), max_len) for d in docs])
    order = [i for i in np.argsort(-lens, kind="stable") if lens[i] > 0]
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        T = int(lens[idx[0]])
        ids = torch.full((len(idx), T), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), T), dtype=torch.long)
        for r, i in enumerate(idx):
            n = int(lens[i])
            ids[r, :n] = torch.from_numpy(docs[i][:n])
            mask[r, :n] = 1
        yield idx, ids, mask


def forward(model, ids, mask, device, hidden: bool):
    """The model's output with attention weights (and hidden states if `hidden`)."""
    out = model(ids.to(device), attention_mask=mask.to(device), output_attentions=True, output_hidden_states=hidden)
    if out.attentions is None or any(a is None for a in out.attentions):
        raise RuntimeError("model returned no attention weights; use the materialised (torch) attention backend")
    return out


@contextlib.contextmanager
def analysis_mode(model):
    """model.eval() and the materialised attention backend (the only one returning weights), restored after."""
    was_training = model.training
    model.eval()
    conf = getattr(model, "config", None)
    old_backend = getattr(conf, "attention_backend", None)
    if old_backend is not None:
        conf.attention_backend = "torch"
    try:
        yield
    finally:
        if old_backend is not None:
            conf.attention_backend = old_backend
        model.train(was_training)


@dataclass
class PassStats:
    """What every pass counts, whatever its metrics: real tokens, layers and heads."""

    num_tokens: int = 0
    num_layers: int = 0
    num_heads: int = 0


def run_pass(model, docs, length: int, batch_size: int, pad_id: int, device, metrics: Sequence[Metric],
             desc: str = "analysis", progress: bool = False, leave: bool = True, capture: bool = False) -> PassStats:
    """One pass over `docs` truncated to `length`, feeding every batch to `metrics` (begun here).

    capture: enter each metric's hooks (Metric.capture) for the pass."""
    from tqdm.auto import tqdm

    hidden = any(m.uses_hidden_states for m in metrics)
    stats = PassStats()
    info = PassInfo(num_docs=len(docs), model_config=getattr(model, "config", None))
    with contextlib.ExitStack() as hooks:
        if capture:
            for m in metrics:
                hooks.enter_context(m.capture(model))
        for m in metrics:
            m.begin(info)
        for idx, ids, mask in tqdm(batches(docs, length, batch_size, pad_id), total=math.ceil(len(docs) / batch_size),
                                   desc=desc, disable=not progress, leave=leave):
            out = forward(model, ids, mask, device, hidden)
            batch = Batch(idx, ids, mask, out.attentions, out.hidden_states if hidden else None)
            for m in metrics:
                m.observe(batch)
            if not stats.num_layers:
                stats.num_layers, stats.num_heads = len(out.attentions), int(out.attentions[0].shape[1])
            stats.num_tokens += int(mask.sum())
    return stats


@dataclass
class AnalysisContext:
    """The model, its documents and the main pass, for metrics that run passes of their own (Metric.finish)."""

    model: torch.nn.Module
    tokens: np.ndarray
    offsets: np.ndarray
    docs: list
    cfg: dict
    device: object = "cpu"
    progress: bool = False
    main: dict = field(default_factory=dict)           # the main pass's metrics by name
    main_stats: PassStats = field(default_factory=PassStats)
    cache: dict = field(default_factory=dict)          # results of extra passes, shared between metrics

    @property
    def max_len(self) -> int:
        return int(self.cfg["max_len"])

    def run(self, metrics: Sequence[Metric], length: int, desc: str) -> PassStats:
        """An extra pass over the documents truncated to `length` (no hooks; progress bar not kept)."""
        return run_pass(self.model, self.docs, length, int(self.cfg["batch_size"]), int(self.cfg["pad_token_id"]),
                        self.device, metrics, desc, self.progress, leave=False)

    def forward(self, ids: torch.Tensor, hidden: bool = True):
        """The model on one unpadded batch of ids [B, T]."""
        return forward(self.model, ids, torch.ones_like(ids), self.device, hidden)
