"""The attention metrics at other truncation lengths: the sink rate at T = sink_short_len (Gu et al.
2024's protocol, beside the full-length rate) and the sweep over cfg["length_sweep"]. Each length is one
pass of the sink and sparsity accumulators over the same documents; a length is run once, and max_len
is the main pass itself."""
from __future__ import annotations

import numpy as np

from .base import Metric, fmt_eps
from .model_pass import AnalysisContext
from .sinks import SinkRate
from .sparsity import Sparsity


def attention_at(context: AnalysisContext, length: int) -> dict:
    """{"num_tokens", "sinks": SinkRate, "sparsity": Sparsity} of the documents truncated to `length`."""
    key = ("attention", length)
    if key not in context.cache:
        main = context.main
        if length == context.max_len and "sinks" in main and "sparsity" in main:
            found = {"num_tokens": context.main_stats.num_tokens, "sinks": main["sinks"], "sparsity": main["sparsity"]}
        else:
            sinks, sparsity = SinkRate.from_config(context.cfg), Sparsity.from_config(context.cfg)
            stats = context.run([sinks, sparsity], length, f"length {length}")
            found = {"num_tokens": stats.num_tokens, "sinks": sinks, "sparsity": sparsity}
        context.cache[key] = found
    return context.cache[key]


class SinkRateShort(Metric):
    """The sink rate on the documents truncated to min(sink_short_len, max_len) tokens (None: not measured)."""

    name = "sink_short"
    arrays_doc = """\
  sink_scores_short         [L, H, N] float32     sink scores at T = sink_short_len (if set)
"""

    def __init__(self, length: int | None = 64):
        self.length = None if length is None else int(length)
        self.found: dict | None = None
        self.used_length = None

    @classmethod
    def from_config(cls, cfg: dict) -> "SinkRateShort":
        return cls(cfg["sink_short_len"])

    def finish(self, context: AnalysisContext) -> None:
        if self.length is not None:  # never longer than the full-length pass
            self.used_length = min(self.length, context.max_len)
            self.found = attention_at(context, self.used_length)

    def result(self) -> dict:
        if self.found is None:
            return {"sink_rate_short": None}
        rates = self.found["sinks"].rates()
        return {"sink_rate_short": {"length": self.used_length, "num_tokens": self.found["num_tokens"],
                                    "sink_rate": rates["sink_rate"], "sink_rate_per_layer": rates["sink_rate_per_layer"]}}

    def arrays(self) -> dict:
        return {} if self.found is None else {"sink_scores_short": self.found["sinks"].scores.astype(np.float32)}


class LengthSweep(Metric):
    """The sink rate and sparsity at each length of cfg["length_sweep"] (in the order given)."""

    name = "length_sweep"
    arrays_doc = """\
  sweep_lengths, sweep_sink_rate_<eps>, sweep_sparsity_zero_pct, sweep_sparsity_le_threshold_pct  (if a sweep ran)
"""

    def __init__(self, lengths=(), eps=(0.2, 0.3)):
        self.lengths = [int(n) for n in lengths or []]
        self.eps = [float(e) for e in eps]
        self.rows: list[dict] = []

    @classmethod
    def from_config(cls, cfg: dict) -> "LengthSweep":
        return cls(cfg["length_sweep"], cfg["sink_eps"])

    def finish(self, context: AnalysisContext) -> None:
        self.rows = []
        for length in self.lengths:
            found = attention_at(context, length)
            sparsity = found["sparsity"].result()["sparsity"]
            self.rows.append({"length": length, "num_tokens": found["num_tokens"],
                              "sink_rate": found["sinks"].rates()["sink_rate"],
                              "sparsity_exact_zero_pct": sparsity["exact_zero_pct"],
                              "sparsity_le_threshold_pct": sparsity["le_threshold_pct"]})

    def result(self) -> dict:
        return {"length_sweep": self.rows}

    def arrays(self) -> dict:
        if not self.rows:
            return {}
        out = {"sweep_lengths": np.array([r["length"] for r in self.rows])}
        for e in self.eps:
            out[f"sweep_sink_rate_{fmt_eps(e)}"] = np.array([r["sink_rate"][fmt_eps(e)] for r in self.rows])
        out["sweep_sparsity_zero_pct"] = np.array([r["sparsity_exact_zero_pct"] for r in self.rows])
        out["sweep_sparsity_le_threshold_pct"] = np.array([r["sparsity_le_threshold_pct"] for r in self.rows])
        return out
