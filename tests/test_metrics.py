"""Metrics of softpick.analysis on synthetic inputs with known answers (the paper's definitions)."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from softpick.analysis import (
    MomentAccumulator,
    SparsityCounts,
    analyze_model,
    attention_sparsity,
    kurtosis,
    sink_rate,
    sink_rate_per_layer,
    sink_scores,
)


# ------------------------------------------------------------------------------------- sink
def _two_sample_attention():
    """B=2, H=1, T=4. Sample 0: 4 valid tokens, key-0 weights per query [1, .1, .1, .1] -> mean .325.
    Sample 1: 2 valid tokens, key-0 weights [1, 0] -> mean .5; its 2 padded query rows put 0 on key 0
    (counting them would give .25)."""
    attn = torch.zeros(2, 1, 4, 4)
    attn[0, 0, :, 0] = torch.tensor([1.0, 0.1, 0.1, 0.1])
    attn[1, 0, :, 0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    return attn, mask


def test_sink_scores_exclude_padded_queries():
    attn, mask = _two_sample_attention()
    s = sink_scores(attn, mask)
    assert s.shape == (2, 1) and s.dtype == torch.float64
    assert s[0, 0].item() == pytest.approx(0.325)
    assert s[1, 0].item() == pytest.approx(0.5)
    # without the mask the padded rows would dilute sample 1 to 0.25
    assert sink_scores(attn)[1, 0].item() == pytest.approx(0.25)


def test_sink_rate_weights_samples_and_padding():
    attn, mask = _two_sample_attention()
    s = sink_scores(attn, mask)  # [B, H] of one layer
    scores = s.T[None]  # [L=1, H=1, N=2]
    assert sink_rate(scores, 0.3) == pytest.approx(100.0)
    assert sink_rate(scores, 0.4) == pytest.approx(50.0)
    # padded queries included -> sample 1 drops below eps: a different (wrong) number
    assert sink_rate(sink_scores(attn).T[None], 0.3) == pytest.approx(50.0)
    # the authors' bug: dividing the count of sink triples by L*H*(number of batches) = 1 gives 200%
    n_batches = 1
    buggy = 100.0 * float((scores > 0.3).sum()) / (1 * 1 * n_batches)
    assert buggy == pytest.approx(200.0) and buggy != sink_rate(scores, 0.3)


def test_sink_rate_batches_of_different_sizes_equal_pooled():
    rng = np.random.default_rng(0)
    L, H, N = 3, 4, 11
    scores = rng.uniform(0, 0.6, size=(L, H, N))
    pooled = sink_rate(scores, 0.3)
    expected = 100.0 * np.mean(scores > 0.3)
    assert pooled == pytest.approx(expected)
    # the same triples split into per-batch chunks of sizes 8 and 3 -> every sample weighs the same
    chunks = [scores[..., :8], scores[..., 8:]]
    assert sink_rate(chunks, 0.3) == pytest.approx(expected)
    per_layer = sink_rate_per_layer(scores, 0.3)
    assert per_layer == pytest.approx([100.0 * np.mean(scores[l] > 0.3) for l in range(L)])
    assert np.mean(per_layer) == pytest.approx(expected)


def test_sink_rate_ignores_nan_and_strict_threshold():
    scores = np.array([0.3, 0.30001, np.nan, 0.0])
    assert sink_rate(scores, 0.3) == pytest.approx(100.0 / 3)  # 0.3 is not "over" 0.3
    assert math.isnan(sink_rate(np.array([np.nan]), 0.3))


def test_sink_like_attention_is_100_percent():
    B, H, T = 3, 2, 6
    attn = torch.zeros(B, H, T, T)
    attn[..., 0] = 1.0  # all mass on BOS
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 4:] = 0
    s = sink_scores(attn, mask)
    assert torch.allclose(s, torch.ones(B, H, dtype=torch.float64))
    assert sink_rate(s, 0.3) == 100.0 and sink_rate(s, 0.2) == 100.0


# --------------------------------------------------------------------------------- sparsity
def test_sparsity_causal_triangle_with_padding():
    # B=2, H=1, T=3; sample 0 fully valid (6 triangle entries), sample 1 valid length 2 (3 entries)
    attn = torch.full((2, 1, 3, 3), 0.5)
    attn[0, 0] = torch.tensor([[1.0, 0.0, 0.0],
                               [0.0, 1.0, 0.0],
                               [1e-6, 0.0, 0.3]])  # triangle: 1, 0, 1, 1e-6, 0, .3 -> 2 exact zeros, 3 <= 1e-5
    attn[1, 0] = torch.tensor([[0.0, 0.0, 0.0],     # triangle entry (0,0) = 0 -> zero; upper part ignored
                               [2e-5, 0.7, 0.0],    # (1,0) = 2e-5 above threshold, (1,1) = .7
                               [0.0, 0.0, 0.0]])    # padded query row: all excluded
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    c = attention_sparsity(attn, mask, threshold=1e-5)
    assert (c.total, c.zero, c.below) == (9, 3, 4)
    assert c.zero_pct == pytest.approx(100 * 3 / 9)
    assert c.below_pct == pytest.approx(100 * 4 / 9)
    c0 = attention_sparsity(attn, mask)  # threshold 0 -> both counts are exact zeros
    assert c0.below == c0.zero == 3
    # no mask: all 12 triangle entries; sample 1's padded row adds 3 zeros
    cn = attention_sparsity(attn, None, threshold=1e-5)
    assert (cn.total, cn.zero) == (12, 6)


def test_sparsity_counts_accumulate_over_batches():
    torch.manual_seed(0)
    attn = torch.relu(torch.randn(4, 3, 5, 5))
    mask = torch.tensor([[1] * 5, [1] * 3 + [0] * 2, [1] * 1 + [0] * 4, [1] * 4 + [0]])
    full = attention_sparsity(attn, mask, 1e-5)
    parts = attention_sparsity(attn[:2], mask[:2], 1e-5) + attention_sparsity(attn[2:], mask[2:], 1e-5)
    assert (parts.total, parts.zero, parts.below) == (full.total, full.zero, full.below)
    assert full.total == 3 * (15 + 6 + 1 + 10)
    assert sum([SparsityCounts(), full], SparsityCounts()).total == full.total


# --------------------------------------------------------------------------------- kurtosis
def test_kurtosis_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    for x in (rng.standard_normal(10_000), rng.standard_t(5, 20_000), rng.exponential(size=5000)):
        assert kurtosis(x) == pytest.approx(stats.kurtosis(x, fisher=False), rel=1e-10)
        assert kurtosis(torch.from_numpy(x).float()) == pytest.approx(
            stats.kurtosis(x.astype(np.float32).astype(np.float64), fisher=False), rel=1e-6)


@pytest.mark.parametrize("p", [0.5, 0.1, 0.01])
def test_kurtosis_bernoulli_closed_form(p):
    n = 100_000
    x = np.zeros(n)
    x[: int(round(p * n))] = 1.0
    q = 1 - p
    assert kurtosis(x) == pytest.approx((1 - 3 * p * q) / (p * q), rel=1e-9)


def test_kurtosis_two_point_symmetric_is_one_with_huge_offset():
    x = np.array([-1.0, 1.0] * 500) * 3.0 + 1e6  # shift must not matter
    acc = MomentAccumulator()
    for chunk in np.split(x, 10):
        acc.update(chunk)
    assert acc.kurtosis == pytest.approx(1.0, rel=1e-9)
    assert acc.mean == pytest.approx(1e6) and acc.variance == pytest.approx(9.0, rel=1e-9)


def test_streaming_merge_equals_one_shot_with_outliers():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    x = rng.standard_normal(200_003) * 0.5 + 3.0
    idx = rng.choice(x.size, 7, replace=False)
    x[idx] = rng.choice([-1, 1], 7) * rng.uniform(1e3, 5e4, 7)  # massive activations
    one = MomentAccumulator().update(x)
    acc = MomentAccumulator()
    sizes = [1, 2, 17, 1000, 50_000, 3, 0, 100_000]
    start = 0
    for s in sizes:
        acc.update(torch.from_numpy(x[start:start + s]))
        start += s
    acc.update(x[start:])
    assert acc.n == x.size
    ref = stats.kurtosis(x, fisher=False)
    assert one.kurtosis == pytest.approx(ref, rel=1e-10)
    assert acc.kurtosis == pytest.approx(ref, rel=1e-10)
    assert acc.mean == pytest.approx(x.mean(), rel=1e-12)
    assert acc.min == x.min() and acc.max == x.max() and acc.max_abs == np.abs(x).max()
    # merging accumulators in a different association order gives the same value
    a, b, c = (MomentAccumulator().update(p) for p in np.array_split(x, 3))
    assert MomentAccumulator().merge(c).merge(a).merge(b).kurtosis == pytest.approx(ref, rel=1e-10)


def test_kurtosis_degenerate():
    assert math.isnan(kurtosis(np.ones(10)))
    assert math.isnan(MomentAccumulator().kurtosis)


# ----------------------------------------------------------------------------- analyze_model
def _tiny_data(n_docs=10, seed=0):
    rng = np.random.default_rng(seed)
    docs = [np.concatenate([[1], rng.integers(3, 64, rng.integers(3, 40)), [2]]) for _ in range(n_docs)]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return tokens, offsets


CFG = dict(num_docs=8, max_len=24, batch_size=3, sink_eps=[0.2, 0.3], zero_threshold=1e-5,
           example_doc=1, length_sweep=[8, 24])


@pytest.mark.parametrize("kind", ["softmax", "softpick"])
def test_analyze_model_tiny_random(kind):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(0)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48, attention_kind=kind))
    tokens, offsets = _tiny_data()
    summary, arrays = analyze_model(model, tokens, offsets, CFG, "cpu")
    lens = np.minimum(np.diff(offsets)[:8], 24)
    assert summary["num_docs"] == 8 and summary["num_tokens"] == int(lens.sum())
    assert summary["num_hidden_values"] == int(lens.sum()) * 32 * 4
    for key in ("kurtosis", "min", "max", "max_abs"):
        assert math.isfinite(summary[key])
    for e in ("0.2", "0.3"):
        assert 0 <= summary["sink_rate"][e] <= 100 and len(summary["sink_rate_per_layer"][e]) == 2
    assert 0 <= summary["sparsity"]["exact_zero_pct"] <= summary["sparsity"]["le_threshold_pct"] <= 100
    if kind == "softmax":
        assert summary["sparsity"]["exact_zero_pct"] == 0.0
    else:
        assert summary["sparsity"]["exact_zero_pct"] > 0.0
    assert [s["length"] for s in summary["length_sweep"]] == [8, 24]
    assert summary["length_sweep"][1]["sink_rate"] == summary["sink_rate"]
    T = min(offsets[2] - offsets[1], 24)
    assert arrays["attn_example"].shape == (2, 2, T, T)
    assert arrays["hidden_max_abs_channel"].shape == (4, 32)
    assert arrays["sink_scores"].shape == (2, 2, 8) and np.isfinite(arrays["sink_scores"]).all()
    assert arrays["hist_counts"].shape == (4, len(arrays["hist_edges"]) + 1)
    assert (arrays["hist_counts"].sum(axis=1) == int(lens.sum()) * 32).all()
    tv = arrays["topk_values"]
    assert np.nanmax(np.abs(tv)) == pytest.approx(summary["max_abs"])
    assert (np.diff(np.abs(tv), axis=1) <= 0).all()
    # the model's config is restored
    assert model.config.attention_backend == "auto"


def test_analyze_model_batching_invariance():
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(1)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48, attention_kind="softpick"))
    tokens, offsets = _tiny_data(seed=3)
    s1, a1 = analyze_model(model, tokens, offsets, {**CFG, "batch_size": 1, "length_sweep": []}, "cpu")
    s4, a4 = analyze_model(model, tokens, offsets, {**CFG, "batch_size": 4, "length_sweep": []}, "cpu")
    np.testing.assert_allclose(a1["sink_scores"], a4["sink_scores"], atol=1e-5)
    assert s1["sink_rate"] == s4["sink_rate"]
    assert s1["kurtosis"] == pytest.approx(s4["kurtosis"], rel=1e-4)
    assert s1["sparsity"]["entries"] == s4["sparsity"]["entries"]


class _SinkModel(torch.nn.Module):
    """Stub model: every query puts all its weight on key 0; hidden states are the one-hot ids."""

    def __init__(self, L=3, H=2, C=8):
        super().__init__()
        self.L, self.H, self.C = L, H, C

    def forward(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False):
        B, T = input_ids.shape
        a = torch.zeros(B, self.H, T, T)
        a[..., 0] = 1.0
        a = a * attention_mask[:, None, None, :].float()  # padded keys get 0 (key 0 is always real)
        h = torch.nn.functional.one_hot(input_ids % self.C, self.C).float()
        return types.SimpleNamespace(attentions=(a,) * self.L,
                                     hidden_states=(h,) * (self.L + 2) if output_hidden_states else None)


def test_analyze_model_sink_like_attention_is_100_percent():
    tokens, offsets = _tiny_data()
    summary, arrays = analyze_model(_SinkModel(), tokens, offsets, CFG, "cpu")
    assert summary["sink_rate"] == {"0.2": 100.0, "0.3": 100.0}
    assert summary["sink_rate_per_layer"]["0.3"] == [100.0] * 3
    np.testing.assert_allclose(arrays["sink_scores_mean"], 1.0)
    # all weight on key 0: every other triangle entry is exactly zero
    lens = np.minimum(np.diff(offsets)[:8], 24)
    tri = (lens * (lens + 1) // 2).sum()
    nonzero = lens.sum()
    assert summary["sparsity"]["entries"] == 3 * 2 * tri
    assert summary["sparsity"]["exact_zero_pct"] == pytest.approx(100 * (tri - nonzero) / tri)


# ------------------------------------------------------------------------------- dead heads
from softpick.analysis import DeadHeadCounts, ValueSample, box_stats, head_output_max_abs  # noqa: E402


def _dead_reference(outs, masks, eps, frac):
    """float64 hand computation: per head, share of real tokens with max_d |o| < eps; dead if >= frac."""
    inact, n = None, 0
    for o, m in zip(outs, masks):
        o = np.abs(o.double().numpy()).max(axis=-1)  # [B, T, H]
        valid = m.numpy().astype(bool)
        c = (o[valid] < eps).sum(axis=0)
        inact = c if inact is None else inact + c
        n += valid.sum()
    share = inact / n
    return share, share >= frac


def test_dead_heads_match_float64_reference_with_zero_head_padding_and_edges():
    g = torch.Generator().manual_seed(0)
    B, T, H, D = 3, 20, 6, 4
    outs, masks = [], []
    for b in range(2):  # two batches: counts accumulate
        o = torch.randn(B, T, H, D, generator=g) * torch.logspace(-8, 0, H)[None, None, :, None]
        mask = torch.ones(B, T, dtype=torch.long)
        mask[1, 15:] = 0
        mask[2, 5:] = 0
        o[..., 0, :] = 0.0                                   # head 0: exact zeros everywhere -> dead
        o[..., 1, :] = 3.0 * mask[..., None]                 # head 1: large on real tokens, 0 on padding -> alive
        o[..., 2, :] = 3.0 * (1 - mask[..., None])           # head 2: 0 on real tokens, large on padding -> dead
        o[..., 3, :] = 0.5                                   # head 3: max |o| == eps exactly -> never inactive
        outs.append(o.float())
        masks.append(mask)
    # head 4: inactive on exactly 95% of the real tokens (threshold edge: dead), head 5: on one token fewer
    n_real = int(sum(m.sum() for m in masks))
    assert n_real % 20 == 0
    active_4 = n_real // 20
    k = 0
    for o, m in zip(outs, masks):
        for b in range(B):
            for t in range(T):
                if m[b, t]:
                    o[b, t, 4] = 10.0 if k < active_4 else 1e-3
                    o[b, t, 5] = 10.0 if k < active_4 + 1 else 1e-3
                    k += 1
    acc = DeadHeadCounts([0.5, 1e-6, 1e-2], num_layers=1, num_heads=H, token_fraction=0.95)
    for o, m in zip(outs, masks):
        acc.add(0, head_output_max_abs(o.reshape(B, T, H * D), H), m)
    for i, eps in enumerate(acc.eps):
        share, dead = _dead_reference(outs, masks, eps, 0.95)
        np.testing.assert_allclose(acc.inactive_fraction()[i, 0], share, rtol=0, atol=1e-12)
        assert (acc.dead()[i, 0] == dead).all()
    s = acc.summary()
    assert acc.dead()[:, 0, 0].all() and acc.dead()[:, 0, 2].all()
    assert not acc.dead()[:, 0, 1].any()
    assert acc.inactive_fraction()[0, 0, 3] == 0.0  # |o| == 0.5 is not < 0.5
    assert acc.inactive_fraction()[0, 0, 4] == pytest.approx(0.95) and acc.dead()[0, 0, 4]
    assert not acc.dead()[0, 0, 5]
    assert s["num_tokens"] == n_real and s["num_heads_total"] == H
    assert s["count"]["0.5"] == int(acc.dead()[0].sum())
    assert s["pct"]["0.5"] == pytest.approx(100 * acc.dead()[0].mean())
    assert s["pct_per_layer"]["1e-06"] == [pytest.approx(100 * acc.dead()[1, 0].mean())]


def test_dead_head_eps_is_compared_exactly_not_in_float32():
    """A float32 output equal to float32(1e-6) (< 1e-6 in exact arithmetic) is inactive at eps 1e-6."""
    v = torch.tensor(1e-6, dtype=torch.float32)
    assert float(v) < 1e-6
    acc = DeadHeadCounts([1e-6], 1, 1, 0.95)
    acc.add(0, v.reshape(1, 1, 1))
    assert acc.inactive[0, 0, 0] == 1


def _model_with_dead_head(kind, seed=0):
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(seed)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=48, attention_kind=kind))
    with torch.no_grad():  # layer 1, head 2: zero values -> exact zero output
        model.model.layers[1].self_attn.v_proj.weight[16:24] = 0.0
    return model


@pytest.mark.parametrize("kind", ["softmax", "softpick"])
def test_analyze_model_dead_heads_against_float64_recomputation(kind):
    """The hook sees each head's output before o_proj: recomputed here in float64 as A_h V_h from the
    returned attention weights and hidden states, one document at a time (no padding at all)."""
    import copy

    model = _model_with_dead_head(kind)
    tokens, offsets = _tiny_data(seed=5)
    eps = [1e-6, 1e-2, 5e-2]
    cfg = {**CFG, "length_sweep": [], "dead_head_eps": eps, "dead_head_token_fraction": 0.5}
    summary, arrays = analyze_model(model, tokens, offsets, cfg, "cpu")
    ref = copy.deepcopy(model).double()
    ref.config.attention_backend = "torch"
    lo = np.zeros((len(eps), 2, 4))
    hi = np.zeros((len(eps), 2, 4))
    n = 0
    with torch.no_grad():
        for d in range(8):
            ids = torch.from_numpy(np.asarray(tokens[offsets[d]:offsets[d + 1]], dtype=np.int64)[:24])[None]
            out = ref(ids, attention_mask=torch.ones_like(ids), output_attentions=True, output_hidden_states=True)
            n += ids.shape[1]
            for l, layer in enumerate(ref.model.layers):
                v = layer.self_attn.v_proj(layer.input_layernorm(out.hidden_states[l]))  # [1, T, H*D]
                v = v.view(1, ids.shape[1], 4, 8).transpose(1, 2)  # [1, H, T, D]
                o = (out.attentions[l] @ v).abs().amax(-1)[0]  # [H, T]
                for i, e in enumerate(eps):  # float32 vs float64 rounding: bracket eps by 1e-4 relative
                    lo[i, l] += (o < e * (1 - 1e-4)).sum(-1).numpy()
                    hi[i, l] += (o < e * (1 + 1e-4)).sum(-1).numpy()
    frac = arrays["dead_head_inactive_fraction"]
    assert frac.shape == (3, 2, 4) and summary["dead_heads"]["num_tokens"] == n
    assert (frac >= lo / n - 1e-12).all() and (frac <= hi / n + 1e-12).all()
    assert (frac[:, 1, 2] == 1.0).all()  # the zeroed head is inactive on every token at every eps
    dead = summary["dead_heads"]
    for i, e in enumerate(eps):
        key = f"{e:g}"
        assert dead["count"][key] == int((frac[i] >= 0.5).sum()) >= 1
        assert dead["pct_per_layer"][key] == [pytest.approx(100 * (frac[i, l] >= 0.5).mean()) for l in range(2)]
    assert dead["pct"]["1e-06"] == pytest.approx(100 * (frac[0] >= 0.5).mean())


def test_analyze_model_dead_heads_exclude_padding():
    """Batches of 3 (right padding) and of 1 (none) count the same tokens: identical inactive shares."""
    model = _model_with_dead_head("softpick", seed=2)
    tokens, offsets = _tiny_data(seed=6)
    base = {**CFG, "length_sweep": [], "sink_short_len": None, "dead_head_eps": [1e-6, 1e-2]}
    s1, a1 = analyze_model(model, tokens, offsets, {**base, "batch_size": 1}, "cpu")
    s3, a3 = analyze_model(model, tokens, offsets, {**base, "batch_size": 3}, "cpu")
    np.testing.assert_allclose(a1["dead_head_inactive_fraction"], a3["dead_head_inactive_fraction"], atol=1e-12)
    assert s1["dead_heads"] == s3["dead_heads"]
    assert s1["dead_heads"]["num_tokens"] == int(np.minimum(np.diff(offsets)[:8], 24).sum())


# ------------------------------------------------------------------------------- T = 64 sink rate
def test_short_sink_rate_equals_full_length_metric_on_pre_truncated_docs():
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(4)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48, attention_kind="softmax"))
    tokens, offsets = _tiny_data(seed=7)
    short = 12
    s_long, a_long = analyze_model(model, tokens, offsets, {**CFG, "max_len": 40, "sink_short_len": short,
                                                             "length_sweep": []}, "cpu")
    docs = [np.asarray(tokens[offsets[i]:offsets[i + 1]])[:short] for i in range(len(offsets) - 1)]
    t2 = np.concatenate(docs).astype(np.uint16)
    o2 = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    s_cut, a_cut = analyze_model(model, t2, o2, {**CFG, "max_len": 40, "sink_short_len": None, "length_sweep": []}, "cpu")
    got = s_long["sink_rate_short"]
    assert got["length"] == short and got["num_tokens"] == s_cut["num_tokens"]
    assert got["sink_rate"] == s_cut["sink_rate"] and got["sink_rate_per_layer"] == s_cut["sink_rate_per_layer"]
    np.testing.assert_allclose(a_long["sink_scores_short"], a_cut["sink_scores"], atol=1e-6)
    assert s_cut["sink_rate_short"] is None and "sink_scores_short" not in a_cut
    # the short pass is the same pass as the sweep's entry of that length
    s_sw, _ = analyze_model(model, tokens, offsets, {**CFG, "max_len": 40, "sink_short_len": short,
                                                      "length_sweep": [short, 40]}, "cpu")
    assert s_sw["length_sweep"][0]["sink_rate"] == got["sink_rate"]


# ------------------------------------------------------------------------------- box plots
def _mpl_box(x):
    from matplotlib import cbook

    return cbook.boxplot_stats(np.asarray(x, dtype=np.float64), whis=1.5)[0]


@pytest.mark.parametrize("case", ["normal", "heavy_tail", "ties", "constant", "two_values", "nan"])
def test_box_stats_match_numpy_quantiles_and_matplotlib(case):
    rng = np.random.default_rng(3)
    x = {"normal": rng.standard_normal(1001),
         "heavy_tail": np.concatenate([rng.standard_normal(5000) * 0.1, [400.0, -250.0, 90.0]]),
         "ties": rng.integers(-3, 4, 800).astype(float),
         "constant": np.full(50, 2.5),
         "two_values": np.array([0.0, 1.0]),
         "nan": np.array([np.nan, 1.0, 2.0, 3.0, np.nan, 100.0])}[case]
    st = box_stats(x)
    clean = x[~np.isnan(x)]
    q = np.quantile(clean, [0.25, 0.5, 0.75])
    assert (st["q1"], st["median"], st["q3"]) == (q[0], q[1], q[2])
    mp = _mpl_box(clean)
    assert st["whisker_lo"] == mp["whislo"] and st["whisker_hi"] == mp["whishi"]
    assert st["outlier_pct"] == pytest.approx(100 * len(mp["fliers"]) / clean.size)
    assert st["n"] == clean.size
    if case == "heavy_tail":
        assert st["outlier_pct"] > 0 and st["whisker_hi"] < 90.0


def test_box_stats_empty():
    st = box_stats(np.array([np.nan]))
    assert st["n"] == 0 and math.isnan(st["median"])


def test_value_sample_exact_below_capacity_uniform_above():
    s = ValueSample(100, seed=1)
    x = torch.arange(60, dtype=torch.float32)
    s.add(x[:25]); s.add(x[25:])
    assert s.exact and sorted(s.values.tolist()) == x.tolist()
    big = ValueSample(500, seed=1)
    pop = torch.arange(20000, dtype=torch.float32)
    for chunk in pop.split(3000):
        big.add(chunk)
    assert not big.exact and big.population == 20000 and len(big.values) == 500
    assert len(set(big.values.tolist())) == 500 and set(big.values.tolist()) <= set(pop.tolist())
    assert abs(np.mean(big.values) - 9999.5) < 4 * 5773.5 / np.sqrt(500)  # a uniform sample's mean
    again = ValueSample(500, seed=1)
    for chunk in pop.split(3000):
        again.add(chunk)
    assert (again.values == big.values).all()  # seeded: reproducible


def test_analyze_model_box_stats_are_exact_quantiles_of_all_hidden_values():
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    torch.manual_seed(8)
    model = SoftpickForCausalLM(SoftpickConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=48, attention_kind="softmax"))
    tokens, offsets = _tiny_data(seed=9)
    summary, arrays = analyze_model(model, tokens, offsets, {**CFG, "length_sweep": [], "box_sample_size": 10**6}, "cpu")
    pooled = [[] for _ in range(4)]
    with torch.no_grad():
        for d in range(8):
            ids = torch.from_numpy(np.asarray(tokens[offsets[d]:offsets[d + 1]], dtype=np.int64)[:24])[None]
            hs = model(ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states
            for l, h in enumerate(hs):
                pooled[l].append(h[0].double().numpy().ravel())
    box = summary["hidden_box"]
    assert box["exact"] == [True] * 4
    for l in range(4):
        x = np.concatenate(pooled[l])
        q = np.quantile(x, [0.25, 0.5, 0.75])
        np.testing.assert_allclose([box["q1"][l], box["median"][l], box["q3"][l]], q, rtol=1e-5, atol=1e-6)
        mp = _mpl_box(x)
        assert box["whisker_lo"][l] == pytest.approx(mp["whislo"], rel=1e-5, abs=1e-6)
        assert box["whisker_hi"][l] == pytest.approx(mp["whishi"], rel=1e-5, abs=1e-6)
        assert box["population"][l] == x.size == box["sample_size"][l]
        np.testing.assert_allclose(np.sort(arrays["hidden_sample"][l][~np.isnan(arrays["hidden_sample"][l])]),
                                   np.sort(x), rtol=1e-5, atol=1e-6)
    # a smaller sample: the same keys, a subsample, flagged as not exact
    s2, a2 = analyze_model(model, tokens, offsets, {**CFG, "length_sweep": [], "box_sample_size": 500}, "cpu")
    assert s2["hidden_box"]["exact"] == [False] * 4 and s2["hidden_box"]["sample_size"] == [500] * 4
    assert a2["hidden_sample"].shape == (4, 500)


def test_short_sink_length_never_exceeds_max_len():
    tokens, offsets = _tiny_data()
    s, a = analyze_model(_SinkModel(), tokens, offsets, {**CFG, "max_len": 10, "sink_short_len": 64,
                                                         "length_sweep": []}, "cpu")
    assert s["sink_rate_short"]["length"] == 10 and s["sink_rate_short"]["sink_rate"] == s["sink_rate"]
    assert s["sink_rate_short"]["num_tokens"] == s["num_tokens"] and s["dead_heads"] is None
