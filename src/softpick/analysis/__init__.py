"""Attention-sink, sparsity and massive-activation analysis of a trained model.

Every metric follows "Metrics, as the authors define them" in the paper (arXiv 2504.20966) and its
authors' analysis code; each module documents its definition:

* sinks.py       sink score / sink rate (Gu et al. 2024), every sample counted once;
* lengths.py     the sink rate at T = sink_short_len (Gu et al.'s T = 64) and the length sweep;
* dead_heads.py  dead heads (the paper's v4 section 7.2);
* moments.py     kurtosis (Pearson, float64, streaming), min / max / max |h| of the hidden states;
* boxstats.py    box-plot statistics per hidden state (the paper's Fig. 4);
* sparsity.py    exact-zero attention sparsity of the causal triangle (and |a| <= 1e-5);
* example.py     one document's attention maps and per-channel max |h| (figures);
* topk.py, histogram.py  the largest |h| with their positions, |h| histograms.

Each metric is an accumulator (base.Metric) listed in registry.METRICS; model_pass.py runs the model
over the documents and hands every batch to every accumulator; `analyze_model` (analyze.py) is that
loop, `run_analysis` the file-level entry point used by the pipeline (JSON summary + NPZ arrays, both
written atomically by files.py). softpick.mechanism and softpick.dynamics measure with the same
accumulators.
"""
from __future__ import annotations

from .analyze import analyze_model, run_analysis
from .base import Batch, Metric, PassInfo
from .boxstats import BOX_WHIS, BoxStats, ValueSample, box_stats, box_summary
from .dead_heads import DeadHeadCounts, DeadHeads, head_output_max_abs
from .example import ExampleDoc
from .files import json_clean, write_json_atomic, write_npz_atomic
from .histogram import HIST_EDGES, Histogram
from .lengths import LengthSweep, SinkRateShort
from .model_pass import load_docs
from .moments import HiddenMoments, MomentAccumulator, kurtosis
from .registry import ARRAYS_DOC, DEFAULT_CFG, METRICS, build_metrics
from .sinks import SinkRate, sink_rate, sink_rate_per_layer, sink_scores
from .sparsity import Sparsity, SparsityCounts, attention_sparsity
from .topk import TopK

# the names these helpers had in the single-module analysis (tests and plots use them)
_box_summary = box_summary
_json_clean = json_clean

__all__ = [
    "sink_scores",
    "sink_rate",
    "sink_rate_per_layer",
    "attention_sparsity",
    "SparsityCounts",
    "MomentAccumulator",
    "kurtosis",
    "analyze_model",
    "run_analysis",
    "load_docs",
    "DEFAULT_CFG",
    "HIST_EDGES",
    "head_output_max_abs",
    "DeadHeadCounts",
    "box_stats",
    "ValueSample",
    "ARRAYS_DOC",
    "METRICS",
    "Metric",
    "Batch",
    "PassInfo",
    "build_metrics",
    "write_json_atomic",
    "write_npz_atomic",
    "SinkRate", "SinkRateShort", "LengthSweep", "DeadHeads", "HiddenMoments", "BoxStats", "Sparsity",
    "ExampleDoc", "TopK", "Histogram", "BOX_WHIS",
]
