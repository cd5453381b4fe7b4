"""Attention-sink, sparsity and massive-activation analysis of a trained model.

Every metric follows "Metrics, as the authors define them" in the paper and its authors' analysis code (notes on
arXiv 2504.20966 and the authors' analysis code):

* **Sink score / sink rate** (Gu et al. 2024): for layer l, head h and sample n, the sink
  score is the mean over the sample's *valid* (non-padded) query positions t of the
  attention weight on key 0 (the BOS token). A (layer, head, sample) triple is a sink when
  its score exceeds eps; the sink rate is the percentage of such triples, reported at
  eps = 0.2 and 0.3. Every sample counts once (the authors' script divides by the number
  of batches instead of batches x batch size -- a bug we do not copy).
* **Sparsity**: fraction of the entries of the causal lower triangle (diagonal included,
  padded queries and keys excluded) that are exactly zero; a second figure counts
  |a| <= 1e-5 as zero.
* **Kurtosis**: every element of every hidden state (embedding output, residual stream
  after each layer, final normed output), padding excluded, pooled into one population;
  Pearson (non-excess) kurtosis mu4 / mu2^2 accumulated in float64. Also min, max, max |x|.
  `kurtosis_hf_hidden_states` pools what transformers' output_hidden_states returns (the
  authors' analysis scripts): the same states without the last layer's un-normed output.
* **Sink rate at T = 64** (Gu et al. 2024's protocol): the same documents truncated to their
  first min(`sink_short_len`, `max_len`) tokens, beside the full-length rate (`sink_rate_short`).
* **Dead heads** (the paper's v4 section 7.2): a head is dead when the max over its channels of
  |head output| (the attention output before o_proj, captured by a forward pre-hook on o_proj)
  is < eps on >= `dead_head_token_fraction` (95%) of the real tokens; reported as % of all
  (layer, head) pairs and per layer, at each eps of `dead_head_eps`.
* **Box-plot statistics** per hidden state (the paper's Fig. 4): quartiles and 1.5 IQR whiskers
  of the values, from a uniform sample of `box_sample_size` values per hidden state (every value
  when the population fits, i.e. exact), beside the exact min / max.

The pure metric functions take tensors; `analyze_model` runs a model over validation
documents and accumulates all of them across batches; `run_analysis` is the file-level
entry point used by the pipeline (JSON summary + NPZ arrays, both written atomically).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .atomic import atomic_path
from .atomic import write_json_atomic as _write_json_atomic
from .finite import check_finite_metrics

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
]

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
BOX_WHIS = 1.5  # whiskers reach the most extreme value within 1.5 IQR of the box (matplotlib / seaborn)

# Log-spaced |x| bin edges of the hidden-state histograms (10 bins per decade, 1e-6 .. 1e5).
# Bin 0 holds |x| < HIST_EDGES[0] (zeros included), bin i holds HIST_EDGES[i-1] <= |x| < HIST_EDGES[i],
# the last bin holds |x| >= HIST_EDGES[-1]: len(HIST_EDGES) + 1 bins.
HIST_EDGES = np.logspace(-6, 5, 111)


def _fmt_eps(eps: float) -> str:
    return f"{float(eps):g}"


# ----------------------------------------------------------------------------------------------
# Sink scores and sink rate
# ----------------------------------------------------------------------------------------------
def sink_scores(attn: torch.Tensor, query_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-(sample, head) sink score: mean over valid query positions of the weight on key 0.

    the paper's notes, "Sink rate (Gu et al. 2024)": "for each layer l and head h, the mean over query
    positions t of the attention weight on key 0 (the first/BOS token) ... Exclude padded
    queries."

    attn: [B, H, T, S] attention weights of one layer. query_mask: [B, T], 1/True for real
    tokens, 0/False for padding (None = all valid). Returns float64 [B, H]; a sample without
    any valid query gets NaN (ignored by `sink_rate`).
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be [B, H, T, S], got {tuple(attn.shape)}")
    B, H, T, _ = attn.shape
    col0 = attn[..., 0].to(torch.float64)  # [B, H, T]
    if query_mask is None:
        return col0.mean(dim=-1)
    if query_mask.shape != (B, T):
        raise ValueError(f"query_mask must be [B, T] = [{B}, {T}], got {tuple(query_mask.shape)}")
    m = query_mask.to(device=attn.device, dtype=torch.float64)[:, None, :]  # [B, 1, T]
    n = m.sum(dim=-1)  # [B, 1]
    s = (col0 * m).sum(dim=-1)
    return torch.where(n > 0, s / n.clamp_min(1.0), torch.full_like(s, float("nan")))


def _as_flat_array(scores) -> np.ndarray:
    if isinstance(scores, torch.Tensor):
        return scores.detach().to("cpu", torch.float64).numpy().ravel()
    if isinstance(scores, np.ndarray):
        return scores.astype(np.float64, copy=False).ravel()
    # a list of per-batch arrays of possibly different sizes
    parts = [_as_flat_array(s) for s in scores]
    return np.concatenate(parts) if parts else np.zeros(0)


def sink_rate(scores, eps: float = 0.3) -> float:
    """Percentage of (layer, head, sample) triples whose sink score exceeds eps.

    the paper's notes: "a head is a sink head when that mean exceeds eps. Report the fraction of
    (layer, head, sample) triples over eps, in %". `scores` holds one sink score per triple
    (any shape, e.g. [L, H, N], or a list of per-batch arrays); each entry is one triple, so
    every sample weighs the same whatever the batch it came in (the denominator is the
    number of triples, i.e. layers x heads x samples, not layers x heads x batches as in the
    authors' buggy script). NaN entries (samples without a valid query) are excluded.
    Returns a float in [0, 100] (NaN if there is no valid triple).
    """
    x = _as_flat_array(scores)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return float("nan")
    return float(100.0 * np.count_nonzero(x > eps) / x.size)


def sink_rate_per_layer(scores, eps: float = 0.3) -> list[float]:
    """Sink rate (%, as `sink_rate`) of each layer separately; scores [L, H, N] (or [L, ...])."""
    x = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    return [sink_rate(x[l], eps) for l in range(x.shape[0])]


# ----------------------------------------------------------------------------------------------
# Sparsity
# ----------------------------------------------------------------------------------------------
@dataclass
class SparsityCounts:
    """Counts over the causal lower triangle (diagonal included, padding excluded).

    total: number of entries counted; zero: entries exactly 0; below: entries with
    |a| <= threshold. Counts add across batches / layers (`+`); percentages via properties.
    """

    total: int = 0
    zero: int = 0
    below: int = 0
    threshold: float = 0.0

    def __add__(self, other: "SparsityCounts") -> "SparsityCounts":
        if self.total and other.total and self.threshold != other.threshold:
            raise ValueError("cannot add sparsity counts of different thresholds")
        thr = other.threshold if not self.total else self.threshold
        return SparsityCounts(self.total + other.total, self.zero + other.zero, self.below + other.below, thr)

    @property
    def zero_pct(self) -> float:
        return 100.0 * self.zero / self.total if self.total else float("nan")

    @property
    def below_pct(self) -> float:
        return 100.0 * self.below / self.total if self.total else float("nan")


def attention_sparsity(
    attn: torch.Tensor, valid_mask: torch.Tensor | None = None, threshold: float = 0.0
) -> SparsityCounts:
    """Zero counts of attention weights over the causal lower triangle, padding excluded.

    the paper's notes, "Sparsity: fraction of entries of the causal lower triangle (diagonal included,
    padding excluded) that are exactly zero; a second figure counts |a| <= 1e-5 as zero."

    attn: [B, H, T, T] (or [B, H, T, S] with the causal diagonal aligned to the last key, as
    in the model); valid_mask: [B, T] (S == T) token mask, 1 = real. An entry (t, s) counts
    when s <= t and both query t and key s are real tokens. Returns `SparsityCounts` with
    `zero` (exact zeros) and `below` (|a| <= threshold; equals `zero` for threshold 0).
    """
    if attn.dim() != 4:
        raise ValueError(f"attn must be [B, H, T, S], got {tuple(attn.shape)}")
    B, H, T, S = attn.shape
    t = torch.arange(T, device=attn.device)[:, None] + (S - T)
    s = torch.arange(S, device=attn.device)[None, :]
    region = (s <= t)[None]  # [1, T, S]
    if valid_mask is not None:
        if valid_mask.shape != (B, S) or S != T:
            raise ValueError(f"valid_mask must be [B, T] = [{B}, {T}] with T == S, got {tuple(valid_mask.shape)}")
        v = valid_mask.to(device=attn.device).bool()
        region = region & v[:, :, None] & v[:, None, :]  # [B, T, S]
    region = region.expand(B, T, S)
    n_per_head = int(region.sum())
    a = attn.abs()
    r = region[:, None]  # [B, 1, T, S]
    zero = int(((a == 0) & r).sum())
    below = int(((a <= threshold) & r).sum()) if threshold > 0 else zero
    return SparsityCounts(total=n_per_head * H, zero=zero, below=below, threshold=float(threshold))


# ----------------------------------------------------------------------------------------------
# Kurtosis (streaming, float64, Chan / Pebay merging of central moments)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Dead heads (v4 section 7.2)
# ----------------------------------------------------------------------------------------------
def head_output_max_abs(out: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Per (sample, token, head) max over the head's channels of |output|, in the output's dtype.

    out: the attention output before o_proj, [B, T, H * D] (o_proj's input) or [B, T, H, D].
    Returns [B, T, H].
    """
    if out.dim() == 3:
        B, T, HD = out.shape
        if HD % num_heads:
            raise ValueError(f"last dim {HD} is not divisible by num_heads {num_heads}")
        out = out.reshape(B, T, num_heads, HD // num_heads)
    if out.dim() != 4 or out.shape[2] != num_heads:
        raise ValueError(f"head output must be [B, T, H*D] or [B, T, H, D] with H = {num_heads}, got {tuple(out.shape)}")
    return out.detach().abs().amax(dim=-1)


@dataclass
class DeadHeadCounts:
    """Per (layer, head) counts of real tokens on which the head is inactive (max |output| < eps).

    `add(layer, max_abs [B, T, H], mask [B, T])` counts one batch of one layer (padded tokens
    excluded); counts add up across batches. `inactive_fraction()` is [E, L, H]; a head is dead
    where that fraction is >= token_fraction (the paper's notes: "max |output| < 1e-6 on >= 95% of tokens").
    """

    eps: Sequence[float]
    num_layers: int
    num_heads: int
    token_fraction: float = 0.95
    inactive: np.ndarray | None = None  # [E, L, H] int64
    tokens: np.ndarray | None = None    # [L] int64 real tokens counted per layer

    def __post_init__(self):
        self.eps = [float(e) for e in self.eps]
        if self.inactive is None:
            self.inactive = np.zeros((len(self.eps), self.num_layers, self.num_heads), dtype=np.int64)
        if self.tokens is None:
            self.tokens = np.zeros(self.num_layers, dtype=np.int64)

    def add(self, layer: int, max_abs: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        B, T, H = max_abs.shape
        if H != self.num_heads:
            raise ValueError(f"expected {self.num_heads} heads, got {H}")
        valid = (torch.ones(B, T, dtype=torch.bool, device=max_abs.device) if mask is None
                 else mask.to(max_abs.device).bool())
        m = max_abs[valid].double()  # [n_valid, H]; compared with eps in float64 (eps need not be a float32)
        for i, e in enumerate(self.eps):
            self.inactive[i, layer] += (m < e).sum(dim=0).cpu().numpy().astype(np.int64)
        self.tokens[layer] += int(valid.sum())

    def inactive_fraction(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.inactive / self.tokens[None, :, None].astype(np.float64)

    def dead(self) -> np.ndarray:
        """[E, L, H] bool: inactive on at least token_fraction of the tokens."""
        return self.inactive_fraction() >= self.token_fraction

    def summary(self) -> dict:
        dead = self.dead()
        return {
            "eps": list(self.eps),
            "token_fraction": float(self.token_fraction),
            "num_tokens": int(self.tokens[0]) if self.num_layers else 0,
            "num_heads_total": int(self.num_layers * self.num_heads),
            "count": {_fmt_eps(e): int(dead[i].sum()) for i, e in enumerate(self.eps)},
            "pct": {_fmt_eps(e): float(100.0 * dead[i].mean()) for i, e in enumerate(self.eps)},
            "pct_per_layer": {_fmt_eps(e): [float(100.0 * x) for x in dead[i].mean(axis=1)]
                              for i, e in enumerate(self.eps)},
        }


def _o_proj_modules(model) -> list:
    """The o_proj Linear of every attention layer, in layer order (empty if the model has none)."""
    return [m for name, m in model.named_modules() if name.endswith("self_attn.o_proj")]


@contextlib.contextmanager
def _capture_head_outputs(model, num_heads: int, sink: list):
    """While active, every forward appends (layer, head_output_max_abs of o_proj's input [B, T, H])
    to `sink` (forward pre-hooks; the model's code is unchanged). Yields the number of layers hooked."""
    handles = []
    for layer, mod in enumerate(_o_proj_modules(model)):
        def hook(_mod, args, layer=layer):
            sink.append((layer, head_output_max_abs(args[0], num_heads)))
        handles.append(mod.register_forward_pre_hook(hook))
    try:
        yield len(handles)
    finally:
        for h in handles:
            h.remove()


# ----------------------------------------------------------------------------------------------
# Box-plot statistics (the paper's Fig. 4)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# Model pass
# ----------------------------------------------------------------------------------------------
def load_docs(tokens: np.ndarray, offsets: np.ndarray, num_docs: int | None) -> list[np.ndarray]:
    """The first `num_docs` documents (each [BOS] + ids + [EOS]) as int64 arrays."""
    offsets = np.asarray(offsets, dtype=np.int64)
    n = len(offsets) - 1 if num_docs is None else min(int(num_docs), len(offsets) - 1)
    return [np.asarray(tokens[offsets[i]:offsets[i + 1]], dtype=np.int64) for i in range(n)]


def _batches(docs: Sequence[np.ndarray], max_len: int, batch_size: int, pad_id: int):
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


def _forward(model, ids, mask, device, hidden: bool):
    out = model(ids.to(device), attention_mask=mask.to(device), output_attentions=True, output_hidden_states=hidden)
    if out.attentions is None or any(a is None for a in out.attentions):
        raise RuntimeError("model returned no attention weights; use the materialised (torch) attention backend")
    return out


@dataclass
class _AttnAcc:
    """Attention metrics of one pass (one truncation length)."""

    num_docs: int
    scores: np.ndarray | None = None  # [L, H, N] sink scores
    sparsity: list = field(default_factory=list)  # per layer SparsityCounts
    num_tokens: int = 0

    def add(self, idx, attns, mask, threshold):
        L, H = len(attns), attns[0].shape[1]
        if self.scores is None:
            self.scores = np.full((L, H, self.num_docs), np.nan)
            self.sparsity = [SparsityCounts(threshold=threshold) for _ in range(L)]
        for l, a in enumerate(attns):
            self.scores[l][:, idx] = sink_scores(a, mask).cpu().numpy().T
            self.sparsity[l] = self.sparsity[l] + attention_sparsity(a, mask, threshold)
        self.num_tokens += int(mask.sum())

    def summary(self, eps_list) -> dict:
        tot = sum(self.sparsity, SparsityCounts())
        return {
            "num_tokens": self.num_tokens,
            "sink_rate": {_fmt_eps(e): sink_rate(self.scores, e) for e in eps_list},
            "sink_rate_per_layer": {_fmt_eps(e): sink_rate_per_layer(self.scores, e) for e in eps_list},
            "sparsity": {"exact_zero_pct": tot.zero_pct, "le_threshold_pct": tot.below_pct,
                         "threshold": tot.threshold, "entries": tot.total},
            "sparsity_per_layer": {"exact_zero_pct": [c.zero_pct for c in self.sparsity],
                                   "le_threshold_pct": [c.below_pct for c in self.sparsity]},
        }


def _attention_pass(model, docs, max_len, batch_size, threshold, pad_id, device, desc, progress):
    from tqdm.auto import tqdm

    acc = _AttnAcc(len(docs))
    n_batches = math.ceil(len(docs) / batch_size)
    for idx, ids, mask in tqdm(_batches(docs, max_len, batch_size, pad_id), total=n_batches, desc=desc,
                               disable=not progress, leave=False):
        out = _forward(model, ids, mask, device, hidden=False)
        acc.add(idx, out.attentions, mask.to(out.attentions[0].device), threshold)
    return acc


class _TopK:
    """Running top-k largest |x| of one hidden-state layer with (doc, token, channel) positions."""

    def __init__(self, k: int):
        self.k = k
        self.abs = np.zeros(0)
        self.val = np.zeros(0)
        self.pos = np.zeros((0, 4), dtype=np.int64)  # doc, token position, channel, token id

    def add(self, h: torch.Tensor, mask: torch.Tensor, idx, ids: torch.Tensor):
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
        self.abs = np.abs(self.val)

    def arrays(self):
        v = np.full(self.k, np.nan)
        p = np.full((self.k, 4), -1, dtype=np.int64)
        v[: len(self.val)] = self.val
        p[: len(self.pos)] = self.pos
        return v, p


def analyze_model(model, tokens, offsets, cfg: dict, device="cpu", progress: bool = False) -> tuple[dict, dict]:
    """Run `model` over the first cfg["num_docs"] validation documents and measure everything.

    Documents are truncated to cfg["max_len"] tokens, batched (cfg["batch_size"], sorted by
    length, right padding + attention_mask) and run under torch.no_grad with attention
    weights and hidden states returned. All metrics are accumulated across batches.

    Returns (summary, arrays). summary (JSON-able) holds the sink rate at each eps (overall
    and per layer; also at T = cfg["sink_short_len"] in "sink_rate_short"), sparsity (exact 0
    and <= zero_threshold, overall and per layer), the kurtosis / min / max / max_abs of the
    pooled hidden states (and per layer), box-plot statistics per hidden state ("hidden_box"),
    dead heads at each cfg["dead_head_eps"] ("dead_heads"; None for a model without
    `self_attn.o_proj` modules), counts of docs and tokens and, if cfg["length_sweep"] is
    non-empty, the sink rate and sparsity at each truncation length. arrays (for an .npz) are
    described in `ARRAYS_DOC`.
    """
    c = {**DEFAULT_CFG, **(cfg or {})}
    eps_list = [float(e) for e in c["sink_eps"]]
    thr = float(c["zero_threshold"])
    max_len, bs, pad_id = int(c["max_len"]), int(c["batch_size"]), int(c["pad_token_id"])
    docs = load_docs(tokens, offsets, c["num_docs"])
    if not c["keep_eos"]:
        docs = [d[:-1] if len(d) > 1 else d for d in docs]
    if not docs:
        raise ValueError("no documents to analyse")
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    conf = getattr(model, "config", None)
    old_backend = getattr(conf, "attention_backend", None)
    if old_backend is not None:
        conf.attention_backend = "torch"  # the only path that materialises attention weights
    num_heads = getattr(conf, "num_attention_heads", None)
    head_out: list = []
    dead: DeadHeadCounts | None = None
    try:
        with torch.no_grad():
            attn_acc = _AttnAcc(len(docs))
            moments: MomentAccumulator | None = None
            layer_moments: list[MomentAccumulator] = []
            hist = topk = samples = None
            n_batches = math.ceil(len(docs) / bs)
            hooks = (_capture_head_outputs(model, num_heads, head_out) if num_heads else contextlib.nullcontext(0))
            with hooks as n_hooked:
                for idx, ids, mask in tqdm(_batches(docs, max_len, bs, pad_id), total=n_batches,
                                           desc="analysis", disable=not progress):
                    head_out.clear()
                    out = _forward(model, ids, mask, device, hidden=True)
                    dev_mask = mask.to(out.attentions[0].device)
                    attn_acc.add(idx, out.attentions, dev_mask, thr)
                    if n_hooked:
                        if dead is None:
                            dead = DeadHeadCounts(c["dead_head_eps"], n_hooked, num_heads,
                                                  float(c["dead_head_token_fraction"]))
                        for layer, m in head_out:
                            dead.add(layer, m, mask)
                    hs = out.hidden_states
                    if moments is None:
                        moments = MomentAccumulator()
                        moments_hf = MomentAccumulator()
                        layer_moments = [MomentAccumulator() for _ in hs]
                        hist = np.zeros((len(hs), len(HIST_EDGES) + 1), dtype=np.int64)
                        topk = [_TopK(int(c["topk"])) for _ in hs]
                        samples = [ValueSample(int(c["box_sample_size"]), int(c["box_seed"]) + l) for l in range(len(hs))]
                        edges_t = torch.tensor(HIST_EDGES, dtype=torch.float64)
                    for l, h in enumerate(hs):
                        hm = h.detach()[mask.to(h.device).bool()]  # [n_valid, C], padding excluded
                        lm = MomentAccumulator().update(hm)
                        layer_moments[l].merge(lm)
                        moments.merge(MomentAccumulator(**vars(lm)))
                        if l != len(hs) - 2:  # transformers' hidden_states: no un-normed last-layer output
                            moments_hf.merge(MomentAccumulator(**vars(lm)))
                        b = torch.bucketize(hm.abs().double().cpu().reshape(-1), edges_t, right=True)
                        hist[l] += torch.bincount(b, minlength=len(HIST_EDGES) + 1).numpy()
                        topk[l].add(h, mask.to(h.device), idx, ids)
                        samples[l].add(hm)
            head_out.clear()

            # example document: attention maps and per-channel max |h|
            ex = int(c["example_doc"])
            ex_offsets = np.asarray(offsets, dtype=np.int64)
            ex = min(max(ex, 0), len(ex_offsets) - 2)
            ex_doc = np.asarray(tokens[ex_offsets[ex]:ex_offsets[ex + 1]], dtype=np.int64)[:max_len]
            ids = torch.from_numpy(ex_doc)[None]
            mask = torch.ones_like(ids)
            out = _forward(model, ids, mask, device, hidden=True)
            m = min(int(c["map_size"]), ids.shape[1])
            ex_maps = torch.stack([a[0, :, :m, :m] for a in out.attentions]).float().cpu().numpy()  # [L, H, m, m]
            ex_chan = torch.stack([h[0].abs().amax(dim=0) for h in out.hidden_states]).float().cpu().numpy()  # [L+2, C]
            ex_tok = torch.stack([h[0].abs().amax(dim=-1) for h in out.hidden_states]).float().cpu().numpy()  # [L+2, T]

            passes = {max_len: attn_acc}  # truncation length -> attention metrics (each length runs once)

            def at_length(length: int) -> _AttnAcc:
                if length not in passes:
                    passes[length] = _attention_pass(model, docs, length, bs, thr, pad_id, device,
                                                     f"length {length}", progress)
                return passes[length]

            short = None
            if c["sink_short_len"] is not None:  # never longer than the full-length pass
                short_len = min(int(c["sink_short_len"]), max_len)
                s = at_length(short_len).summary(eps_list)
                short = {"length": short_len, "num_tokens": s["num_tokens"],
                         "sink_rate": s["sink_rate"], "sink_rate_per_layer": s["sink_rate_per_layer"]}
            sweep = []
            for length in c["length_sweep"] or []:
                length = int(length)
                s = at_length(length).summary(eps_list)
                sweep.append({"length": length, "num_tokens": s["num_tokens"], "sink_rate": s["sink_rate"],
                              "sparsity_exact_zero_pct": s["sparsity"]["exact_zero_pct"],
                              "sparsity_le_threshold_pct": s["sparsity"]["le_threshold_pct"]})
    finally:
        if old_backend is not None:
            conf.attention_backend = old_backend
        model.train(was_training)

    att = attn_acc.summary(eps_list)
    md = moments.as_dict()
    summary = {
        "attention_kind": getattr(conf, "attention_kind", None),
        "num_docs": len(docs),
        "num_tokens": att["num_tokens"],
        "max_len": max_len,
        "num_layers": int(attn_acc.scores.shape[0]),
        "num_heads": int(attn_acc.scores.shape[1]),
        "sink_eps": eps_list,
        "sink_rate": att["sink_rate"],
        "sink_rate_per_layer": att["sink_rate_per_layer"],
        "sink_rate_short": short,
        "dead_heads": dead.summary() if dead is not None else None,
        "kurtosis": md["kurtosis"],
        # the authors' pool: transformers' output_hidden_states (embedding, each layer's output but the
        # last, the final normed output), i.e. ours without the last layer's un-normed output
        "kurtosis_hf_hidden_states": moments_hf.kurtosis,
        "min": md["min"],
        "max": md["max"],
        "max_abs": md["max_abs"],
        "mean": md["mean"],
        "std": md["std"],
        "num_hidden_values": md["count"],
        "hidden_state_names": ["embedding"] + [f"layer {i}" for i in range(len(layer_moments) - 2)] + ["final norm"],
        "per_hidden_state": {k: [lm.as_dict()[k] for lm in layer_moments] for k in ("kurtosis", "min", "max", "max_abs")},
        "hidden_box": _box_summary(samples),
        "sparsity": att["sparsity"],
        "sparsity_per_layer": att["sparsity_per_layer"],
        "example_doc": ex,
        "example_len": int(ids.shape[1]),
        "length_sweep": sweep,
        "config": {k: c[k] for k in DEFAULT_CFG},
    }
    tk_v, tk_p = zip(*(t.arrays() for t in topk))
    tk_p = np.stack(tk_p)
    arrays = {
        "attn_example": ex_maps.astype(np.float32),
        "example_tokens": ex_doc[:m],
        "hidden_max_abs_channel": ex_chan.astype(np.float32),
        "hidden_max_abs_token": ex_tok.astype(np.float32),
        "topk_values": np.stack(tk_v),
        "topk_doc": tk_p[..., 0],
        "topk_position": tk_p[..., 1],
        "topk_channel": tk_p[..., 2],
        "topk_token_id": tk_p[..., 3],
        "hist_edges": HIST_EDGES.copy(),
        "hist_counts": hist,
        "sink_scores": attn_acc.scores.astype(np.float32),
        "sink_scores_mean": np.nanmean(attn_acc.scores, axis=-1),
        "sparsity_per_layer_zero_pct": np.array(att["sparsity_per_layer"]["exact_zero_pct"]),
        "sparsity_per_layer_le_threshold_pct": np.array(att["sparsity_per_layer"]["le_threshold_pct"]),
    }
    arrays["hidden_sample"] = _padded_samples(samples)
    if dead is not None:
        arrays["dead_head_eps"] = np.array(dead.eps)
        arrays["dead_head_inactive_fraction"] = dead.inactive_fraction()
    if short is not None:
        arrays["sink_scores_short"] = passes[short["length"]].scores.astype(np.float32)
    if sweep:
        arrays["sweep_lengths"] = np.array([s["length"] for s in sweep])
        for e in eps_list:
            arrays[f"sweep_sink_rate_{_fmt_eps(e)}"] = np.array([s["sink_rate"][_fmt_eps(e)] for s in sweep])
        arrays["sweep_sparsity_zero_pct"] = np.array([s["sparsity_exact_zero_pct"] for s in sweep])
        arrays["sweep_sparsity_le_threshold_pct"] = np.array([s["sparsity_le_threshold_pct"] for s in sweep])
    return summary, arrays


def _box_summary(samples: list[ValueSample]) -> dict:
    """Box-plot statistics of every hidden state's sample, as lists over hidden states."""
    stats = [box_stats(smp.values) for smp in samples]
    out = {k: [st[k] for st in stats] for k in ("whisker_lo", "q1", "median", "q3", "whisker_hi", "outlier_pct")}
    out.update(whis=BOX_WHIS, sample_size=[st["n"] for st in stats], population=[smp.population for smp in samples],
               exact=[smp.exact for smp in samples])
    return out


def _padded_samples(samples: list[ValueSample]) -> np.ndarray:
    k = max(len(smp.values) for smp in samples)
    out = np.full((len(samples), k), np.nan, dtype=np.float32)
    for i, smp in enumerate(samples):
        out[i, : len(smp.values)] = smp.values
    return out


ARRAYS_DOC = """analysis .npz contents (L layers, H heads, C channels, N docs, L+2 hidden states:
embedding, after each layer, final norm; m = min(map_size, example length)):
  attn_example              [L, H, m, m] float32  attention weights of the example doc, top-left crop
  example_tokens            [m] int64            its token ids
  hidden_max_abs_channel    [L+2, C] float32      example doc: max over tokens of |h| per channel
  hidden_max_abs_token      [L+2, T] float32      example doc: max over channels of |h| per token
  topk_values               [L+2, k] float64      the k largest-|x| hidden values over all docs (signed; NaN pad)
  topk_doc / topk_position / topk_channel / topk_token_id  [L+2, k] int64 where they occur (-1 pad)
  hist_edges                [E] float64           log-spaced |x| bin edges (HIST_EDGES)
  hist_counts               [L+2, E+1] int64      |x| < e0, [e_{i-1}, e_i), >= e_{E-1}; all docs, padding excluded
  sink_scores               [L, H, N] float32     per (layer, head, doc) sink score
  sink_scores_mean          [L, H] float64        averaged over docs
  sparsity_per_layer_zero_pct / _le_threshold_pct  [L]
  hidden_sample             [L+2, k] float32      uniform sample of each hidden state's values (all of them when they fit;
                                                 NaN pad), the population of the box plots (summary "hidden_box")
  dead_head_eps             [E] float64           dead-head thresholds (if the model has self_attn.o_proj modules)
  dead_head_inactive_fraction [E, L, H] float64   fraction of real tokens with max |head output| < eps
  sink_scores_short         [L, H, N] float32     sink scores at T = sink_short_len (if set)
  sweep_lengths, sweep_sink_rate_<eps>, sweep_sparsity_zero_pct, sweep_sparsity_le_threshold_pct  (if a sweep ran)
"""


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def _json_clean(o):
    if isinstance(o, dict):
        return {str(k): _json_clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_clean(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        f = float(o)
        return f if math.isfinite(f) else None
    if isinstance(o, np.ndarray):
        return _json_clean(o.tolist())
    return o


def write_json_atomic(path, obj) -> None:
    _write_json_atomic(path, _json_clean(obj))


def write_npz_atomic(path, arrays: dict) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


def run_analysis(model_dir, data_dir, cfg: dict, out_json, out_npz, device="cpu") -> dict:
    """Load a saved model and the validation tokens, analyse, write JSON + NPZ atomically.

    model_dir: a save_pretrained directory of SoftpickForCausalLM. data_dir: holds
    tokens_val.npy (1-D token ids, docs framed [BOS] ids [EOS]) and docs_val.npy (offsets,
    n_docs + 1). A NaN / inf weight or summary number raises NonFiniteError (nothing written). Returns the summary.
    """
    from .loading import load_model, resolve_device

    c = {**DEFAULT_CFG, **(cfg or {})}
    device = resolve_device(device)
    dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[c["dtype"]]
    model = load_model(model_dir, dtype=dtype, device=device)  # files checked against the manifest; finite
    data_dir = Path(data_dir)
    tokens = np.load(data_dir / "tokens_val.npy", mmap_mode="r")
    offsets = np.load(data_dir / "docs_val.npy")
    summary, arrays = analyze_model(model, tokens, offsets, c, device, progress=True)
    # every number of a healthy model's summary is finite (the echoed config may hold nulls)
    check_finite_metrics(summary, out_json, optional=lambda path: path.split(".")[0] == "config")
    summary["model_dir"] = str(model_dir)
    summary["data_dir"] = str(data_dir)
    write_npz_atomic(out_npz, arrays)
    write_json_atomic(out_json, summary)
    return summary
