"""The registered metrics, in the order their keys appear in the analysis JSON, and the analysis config.

Adding a metric:
  1. one module in this package with a `Metric` subclass (base.py): `name`, `from_config`, what it
     observes (`observe` per batch of the main pass, or `finish` for passes of its own) and what it
     reports (`result` -> JSON keys, `arrays` -> NPZ arrays, described in `arrays_doc`);
  2. its class in METRICS below (the position sets where its keys appear in the JSON);
  3. if it reads config keys: their defaults in DEFAULT_CFG below and their entries in
     workflow/schemas/analysis.schema.json (the schema refuses unknown keys).
The pipeline picks the new module up by itself (workflow/rules/common.smk lists every file here).
"""
from __future__ import annotations

from typing import Iterable

from .base import Metric
from .boxstats import BoxStats
from .dead_heads import DeadHeads
from .example import ExampleDoc
from .histogram import Histogram
from .lengths import LengthSweep, SinkRateShort
from .moments import HiddenMoments
from .sinks import SinkRate
from .sparsity import Sparsity
from .topk import TopK

METRICS: dict[str, type[Metric]] = {cls.name: cls for cls in (
    SinkRate, SinkRateShort, DeadHeads, HiddenMoments, BoxStats, Sparsity, ExampleDoc, LengthSweep, TopK, Histogram,
)}

DEFAULT_CFG: dict = {
    "num_docs": 64,
    "max_len": 256,
    "batch_size": 8,
    "sink_eps": [0.2, 0.3],
    "zero_threshold": 1e-5,
    "example_doc": 0,
    "length_sweep": [],
    "topk": 16,          # largest |activations| kept per hidden-state layer
    "map_size": 128,     # attention maps of the example doc are cropped to map_size x map_size
    "dtype": "float32",  # model dtype for the analysis forward passes (run_analysis only)
    "pad_token_id": 0,   # id written into padded positions (masked out; value irrelevant)
    "sink_short_len": 64,              # Gu et al.'s T = 64 sink rate (None = not measured)
    "dead_head_eps": [1e-6, 1e-2],     # a head is dead where max |output| < eps ...
    "dead_head_token_fraction": 0.95,  # ... on at least this fraction of the tokens
    "box_sample_size": 20000,          # hidden values sampled per hidden state for the box plots
    "box_seed": 0,                     # seed of that sample (used only when a population exceeds it)
    "keep_eos": True,                  # False: drop each document's closing EOS (the authors' tokenization has none)
}

ARRAYS_DOC = ("analysis .npz contents (L layers, H heads, C channels, N docs, L+2 hidden states:\n"
              "embedding, after each layer, final norm; m = min(map_size, example length)):\n"
              + "".join(cls.arrays_doc for cls in METRICS.values()))


def build_metrics(cfg: dict, names: Iterable[str] | None = None) -> list[Metric]:
    """The metrics `names` (all when None), configured from the merged config, in registry order."""
    wanted = list(METRICS) if names is None else list(names)
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        raise ValueError(f"unknown analysis metric(s) {unknown}; known: {list(METRICS)}")
    return [cls.from_config(cfg) for name, cls in METRICS.items() if name in wanted]


def merged_config(cfg: dict | None) -> dict:
    """DEFAULT_CFG overridden by `cfg`."""
    return {**DEFAULT_CFG, **(cfg or {})}


__all__ = ["METRICS", "DEFAULT_CFG", "ARRAYS_DOC", "build_metrics", "merged_config"]
