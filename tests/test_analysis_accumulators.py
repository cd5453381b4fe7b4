"""Every accumulator of softpick.analysis on its own, against a plain float64 reference computed per
document, on random and adversarial inputs: all-zero attention rows (as softpick produces), a head with
all its mass on token 0, constant hidden states, documents of length 1, garbage in the padding."""
from __future__ import annotations

import math
import types

import numpy as np
import pytest
import torch

from softpick.analysis import (
    HIST_EDGES, Batch, BoxStats, DeadHeads, ExampleDoc, HiddenMoments, Histogram, LengthSweep, PassInfo,
    SinkRate, SinkRateShort, Sparsity, TopK, analyze_model, build_metrics,
)
from softpick.analysis.model_pass import AnalysisContext, load_docs, run_pass
from softpick.analysis.registry import ARRAYS_DOC, METRICS

L, H, C = 2, 3, 5
GARBAGE_ATTN, GARBAGE_HIDDEN = 0.7, 1e9  # written into padded positions: must never count


def make_docs(rng, lengths, adversarial=True):
    """Per document: attention [L] x [H, n, n] (causal rows summing to 1, exact zeros), hidden [L+2] x [n, C], ids [n]."""
    docs = []
    for n in lengths:
        attn = []
        for l in range(L):
            w = rng.random((H, n, n)) ** 3
            w[rng.random((H, n, n)) < 0.3] = 0.0
            w = np.tril(w)
            w[..., 0] += 1e-3  # every row has mass before the adversarial edits
            w = (w / w.sum(-1, keepdims=True)).astype(np.float32)
            if adversarial and l == 0:  # head 0: all mass on token 0
                w[0] = 0.0
                w[0, :, 0] = 1.0
            if adversarial and l == 1:
                w[1] = 0.0          # head 1: all-zero rows
                w[2, 1::2] = 0.0    # head 2: every other row zero
            attn.append(w)
        hidden = [(rng.standard_normal((n, C)) * (1 + s)).astype(np.float32) for s in range(L + 2)]
        hidden[1][0, 0] = 300.0  # a massive activation on the first token
        if adversarial:
            hidden[2][:] = 0.25   # a constant hidden state
        docs.append({"attn": attn, "hidden": hidden, "ids": rng.integers(1, 50, n)})
    return docs


def make_batches(rng, docs, batch_size, with_mask=True):
    """Batches of the documents in a random order, right padded with garbage."""
    order = rng.permutation(len(docs))
    out = []
    for start in range(0, len(docs), batch_size):
        idx = [int(i) for i in order[start:start + batch_size]]
        T = max(len(docs[i]["ids"]) for i in idx)
        B = len(idx)
        attn = [torch.full((B, H, T, T), GARBAGE_ATTN) for _ in range(L)]
        hidden = [torch.full((B, T, C), GARBAGE_HIDDEN) for _ in range(L + 2)]
        ids = torch.zeros(B, T, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        for r, i in enumerate(idx):
            n = len(docs[i]["ids"])
            for l in range(L):
                attn[l][r, :, :n, :n] = torch.from_numpy(docs[i]["attn"][l])
            for s in range(L + 2):
                hidden[s][r, :n] = torch.from_numpy(docs[i]["hidden"][s])
            ids[r, :n] = torch.from_numpy(docs[i]["ids"])
            mask[r, :n] = 1
        out.append(Batch(idx, ids, mask if with_mask else None, tuple(attn), tuple(hidden)))
    return out


def feed(metric, docs, batches):
    metric.begin(PassInfo(num_docs=len(docs)))
    for b in batches:
        metric.observe(b)
    return metric


LENGTH_SETS = {"random": [7, 1, 12, 3, 9, 2, 12], "length_one": [1, 1, 1, 1], "equal": [6, 6, 6, 6, 6]}


@pytest.fixture(params=[(name, adv) for name in LENGTH_SETS for adv in (True, False)], ids=lambda p: f"{p[0]}-adv{p[1]}")
def data(request):
    name, adversarial = request.param
    rng = np.random.default_rng(len(name) + 10 * adversarial)
    docs = make_docs(rng, LENGTH_SETS[name], adversarial)
    return docs, make_batches(rng, docs, batch_size=3)


# ----------------------------------------------------------------------------------------- references
def ref_sink_scores(docs):
    return np.array([[[d["attn"][l][h, :, 0].astype(np.float64).mean() for d in docs] for h in range(H)] for l in range(L)])


def ref_rate(scores, eps):
    x = scores[~np.isnan(scores)]
    return 100.0 * float(np.sum(x > eps)) / x.size


def ref_sparsity(docs, layers, thr):
    total = zero = below = 0
    for d in docs:
        for l in layers:
            for h in range(H):
                n = len(d["ids"])
                for t in range(n):
                    for s in range(t + 1):
                        a = abs(float(d["attn"][l][h, t, s]))
                        total += 1
                        zero += a == 0.0
                        below += a <= thr
    return total, zero, below


def ref_moments(values):
    x = np.concatenate([v.astype(np.float64).ravel() for v in values])
    d = x - x.mean()
    m2 = float(np.mean(d ** 2))
    return {"n": x.size, "mean": x.mean(), "std": math.sqrt(m2), "min": x.min(), "max": x.max(),
            "kurtosis": float(np.mean(d ** 4)) / m2 ** 2 if m2 > 0 else float("nan")}


def close(a, b, rel=1e-9):
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel, abs=1e-12)


# ------------------------------------------------------------------------------------------ sinks
def test_sink_rate_against_reference(data):
    docs, batches = data
    m = feed(SinkRate([0.2, 0.3, 0.999]), docs, batches)
    ref = ref_sink_scores(docs)
    np.testing.assert_allclose(m.scores, ref, rtol=1e-12, atol=1e-15)
    res = m.result()
    assert res["sink_eps"] == [0.2, 0.3, 0.999]
    for e in (0.2, 0.3, 0.999):
        assert res["sink_rate"][f"{e:g}"] == pytest.approx(ref_rate(ref, e))
        assert res["sink_rate_per_layer"][f"{e:g}"] == pytest.approx([ref_rate(ref[l], e) for l in range(L)])
    arr = m.arrays()
    assert arr["sink_scores"].dtype == np.float32 and arr["sink_scores"].shape == (L, H, len(docs))
    np.testing.assert_allclose(arr["sink_scores_mean"], ref.mean(-1), rtol=1e-12)


def test_sink_rate_adversarial_heads():
    rng = np.random.default_rng(0)
    docs = make_docs(rng, [4, 1, 6])
    m = feed(SinkRate([0.3]), docs, make_batches(rng, docs, 2))
    assert (m.scores[0, 0] == 1.0).all()  # all mass on token 0: a sink in every sample
    assert (m.scores[1, 1] == 0.0).all()  # all-zero rows: never a sink
    assert m.result()["sink_rate_per_layer"]["0.3"][0] >= 100.0 / 3


def test_sink_rate_without_mask_equals_masked_on_unpadded_batches():
    rng = np.random.default_rng(1)
    docs = make_docs(rng, [5] * 4)
    a = feed(SinkRate(), docs, make_batches(np.random.default_rng(2), docs, 2))
    b = feed(SinkRate(), docs, make_batches(np.random.default_rng(2), docs, 2, with_mask=False))
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-12)
    assert a.result() == b.result()


# ---------------------------------------------------------------------------------------- sparsity
def test_sparsity_against_reference(data):
    docs, batches = data
    m = feed(Sparsity(1e-3), docs, batches)
    res = m.result()
    total, zero, below = ref_sparsity(docs, range(L), 1e-3)
    assert res["sparsity"]["entries"] == total
    assert res["sparsity"]["exact_zero_pct"] == pytest.approx(100.0 * zero / total)
    assert res["sparsity"]["le_threshold_pct"] == pytest.approx(100.0 * below / total)
    for l in range(L):
        t, z, b = ref_sparsity(docs, [l], 1e-3)
        assert res["sparsity_per_layer"]["exact_zero_pct"][l] == pytest.approx(100.0 * z / t)
        assert res["sparsity_per_layer"]["le_threshold_pct"][l] == pytest.approx(100.0 * b / t)
    np.testing.assert_array_equal(m.arrays()["sparsity_per_layer_zero_pct"], res["sparsity_per_layer"]["exact_zero_pct"])


def test_sparsity_all_zero_rows_count_fully():
    rng = np.random.default_rng(3)
    docs = make_docs(rng, [1, 4])
    for d in docs:
        d["attn"] = [np.zeros_like(a) for a in d["attn"]]
    res = feed(Sparsity(1e-5), docs, make_batches(rng, docs, 2)).result()
    assert res["sparsity"]["exact_zero_pct"] == 100.0 == res["sparsity"]["le_threshold_pct"]
    assert res["sparsity"]["entries"] == L * H * (1 + 10)


# ----------------------------------------------------------------------------------------- moments
def test_moments_against_reference(data):
    docs, batches = data
    res = feed(HiddenMoments(), docs, batches).result()
    every = ref_moments([d["hidden"][s] for d in docs for s in range(L + 2)])
    hf = ref_moments([d["hidden"][s] for d in docs for s in range(L + 2) if s != L])
    assert res["num_hidden_values"] == every["n"]
    for k in ("mean", "std", "min", "max", "kurtosis"):
        assert close(res[k], every[k]), k
    assert res["max_abs"] == max(abs(every["min"]), abs(every["max"]))
    assert close(res["kurtosis_hf_hidden_states"], hf["kurtosis"])
    assert res["hidden_state_names"] == ["embedding"] + [f"layer {i}" for i in range(L)] + ["final norm"]
    for s in range(L + 2):
        one = ref_moments([d["hidden"][s] for d in docs])
        assert close(res["per_hidden_state"]["kurtosis"][s], one["kurtosis"])
        assert res["per_hidden_state"]["min"][s] == one["min"] and res["per_hidden_state"]["max"][s] == one["max"]


def test_moments_of_constant_hidden_states_are_finite_with_nan_kurtosis():
    rng = np.random.default_rng(4)
    docs = make_docs(rng, [1, 3, 2])
    for d in docs:
        d["hidden"] = [np.full_like(h, 1e4) for h in d["hidden"]]  # NaN-free, zero variance
    res = feed(HiddenMoments(), docs, make_batches(rng, docs, 2)).result()
    assert math.isnan(res["kurtosis"]) and math.isnan(res["kurtosis_hf_hidden_states"])
    assert res["std"] == 0.0 and res["mean"] == 1e4 and res["min"] == res["max"] == res["max_abs"] == 1e4
    assert all(math.isnan(k) for k in res["per_hidden_state"]["kurtosis"])


def test_moments_with_a_huge_offset_match_the_reference():
    rng = np.random.default_rng(5)
    docs = make_docs(rng, [9, 4, 7], adversarial=False)
    for d in docs:
        d["hidden"] = [(h.astype(np.float64) * 1e-2 + 5e3).astype(np.float32) for h in d["hidden"]]
    res = feed(HiddenMoments(), docs, make_batches(rng, docs, 2)).result()
    ref = ref_moments([d["hidden"][s] for d in docs for s in range(L + 2)])
    assert res["kurtosis"] == pytest.approx(ref["kurtosis"], rel=1e-6)
    assert res["std"] == pytest.approx(ref["std"], rel=1e-6)


# -------------------------------------------------------------------------------------- dead heads
class _FakeModel(torch.nn.Module):
    """Named like the project's model (layers.i.self_attn.o_proj); `run` feeds head outputs to o_proj."""

    def __init__(self, layers, heads):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Module() for _ in range(layers))
        for layer in self.layers:
            layer.self_attn = torch.nn.Module()
            layer.self_attn.o_proj = torch.nn.Identity()
        self.config = types.SimpleNamespace(num_attention_heads=heads)

    def run(self, outs):
        for layer, o in zip(self.layers, outs):
            layer.self_attn.o_proj(o)


def test_dead_heads_against_reference():
    rng = np.random.default_rng(6)
    D, eps, frac = 4, [1e-6, 1e-2, 0.5], 0.6
    lengths = [5, 1, 8, 3]
    scales = np.array([0.0, 1e-3, 1.0, 0.5])  # head 0: exact zeros (dead at every eps)
    outs = [[(rng.standard_normal((n, 4, D)) * scales[None, :, None]).astype(np.float32) for _ in range(L)]
            for n in lengths]
    for o in outs:
        o[1][: max(1, len(o[1]) // 2), 2] = 0.0  # layer 1, head 2: zero on half the tokens
    model = _FakeModel(L, 4)
    m = DeadHeads(eps, frac)
    with m.capture(model):
        m.begin(PassInfo(len(lengths)))
        for start in (0, 2):
            idx = [start, start + 1]
            T = max(lengths[i] for i in idx)
            mask = torch.zeros(2, T, dtype=torch.long)
            batch_outs = [torch.full((2, T, 4 * D), 0.0) for _ in range(L)]  # padding: inactive, must not count
            for r, i in enumerate(idx):
                mask[r, :lengths[i]] = 1
                for l in range(L):
                    batch_outs[l][r, :lengths[i]] = torch.from_numpy(outs[i][l].reshape(lengths[i], -1))
            model.run(batch_outs)
            m.observe(Batch(idx, torch.zeros(2, T, dtype=torch.long), mask, ()))
    assert not any(mod._forward_pre_hooks for mod in model.modules())  # hooks removed
    res, arr = m.result()["dead_heads"], m.arrays()
    n = sum(lengths)
    ref = np.zeros((len(eps), L, 4))
    for i, e in enumerate(eps):
        for o in outs:
            for l in range(L):
                ref[i, l] += (np.abs(o[l].astype(np.float64)).max(-1) < e).sum(0)
    ref /= n
    np.testing.assert_allclose(arr["dead_head_inactive_fraction"], ref, rtol=0, atol=1e-15)
    np.testing.assert_array_equal(arr["dead_head_eps"], eps)
    assert res["num_tokens"] == n and res["num_heads_total"] == L * 4
    for i, e in enumerate(eps):
        assert res["count"][f"{e:g}"] == int((ref[i] >= frac).sum())
        assert res["pct_per_layer"][f"{e:g}"] == pytest.approx(list(100 * (ref[i] >= frac).mean(-1)))
    assert (ref[:, :, 0] == 1.0).all()


def test_dead_heads_without_o_proj_report_none():
    m = DeadHeads()
    with m.capture(torch.nn.Linear(2, 2)):
        m.begin(PassInfo(1))
        m.observe(Batch([0], torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1), ()))
    assert m.result() == {"dead_heads": None} and m.arrays() == {}


# ---------------------------------------------------------------------------------------- box plots
def test_box_stats_exact_sample_is_every_real_value(data):
    docs, batches = data
    m = feed(BoxStats(sample_size=10**6, seed=1), docs, batches)
    box, sample = m.result()["hidden_box"], m.arrays()["hidden_sample"]
    for s in range(L + 2):
        x = np.concatenate([d["hidden"][s].ravel() for d in docs]).astype(np.float64)
        got = sample[s][~np.isnan(sample[s])]
        np.testing.assert_array_equal(np.sort(got), np.sort(x).astype(np.float32))
        q = np.quantile(x, [0.25, 0.5, 0.75])
        assert [box["q1"][s], box["median"][s], box["q3"][s]] == pytest.approx(list(q), rel=1e-12)
        inside = x[(x >= q[0] - 1.5 * (q[2] - q[0])) & (x <= q[2] + 1.5 * (q[2] - q[0]))]
        assert box["whisker_lo"][s] == min(inside.min(), q[0]) and box["whisker_hi"][s] == max(inside.max(), q[2])
        assert box["population"][s] == x.size == box["sample_size"][s] and box["exact"][s]


def test_box_stats_subsample_is_a_subset_of_the_population():
    rng = np.random.default_rng(7)
    docs = make_docs(rng, [12, 9, 11])
    m = feed(BoxStats(sample_size=20, seed=0), docs, make_batches(rng, docs, 2))
    box, sample = m.result()["hidden_box"], m.arrays()["hidden_sample"]
    for s in range(L + 2):
        x = np.concatenate([d["hidden"][s].ravel() for d in docs])
        assert box["population"][s] == x.size and box["sample_size"][s] == 20 and not box["exact"][s]
        assert set(sample[s].tolist()) <= set(x.tolist())  # no padding garbage, no invented value
    assert box["q1"][2] == box["q3"][2] == 0.25 and box["outlier_pct"][2] == 0.0  # the constant state


# ------------------------------------------------------------------------------------- top k, histogram
def test_topk_against_reference(data):
    docs, batches = data
    k = 7
    arr = feed(TopK(k), docs, batches).arrays()
    for s in range(L + 2):
        rows = [(abs(float(v)), float(v), n, t, c, int(d["ids"][t]))
                for n, d in enumerate(docs) for (t, c), v in np.ndenumerate(d["hidden"][s])]
        rows.sort(key=lambda r: -r[0])
        top, got = rows[:k], arr["topk_values"][s]
        assert np.abs(got[: len(top)]).tolist() == [r[0] for r in top]
        for j in range(len(top)):  # positions point to a value of that size (ties: any of them)
            doc, t, c, tok = (arr[f"topk_{f}"][s, j] for f in ("doc", "position", "channel", "token_id"))
            assert docs[doc]["hidden"][s][t, c] == got[j] and docs[doc]["ids"][t] == tok
        assert np.isnan(got[len(top):]).all() and (arr["topk_doc"][s, len(top):] == -1).all()


def test_topk_pads_when_there_are_fewer_values_than_k():
    rng = np.random.default_rng(8)
    docs = make_docs(rng, [1, 3])  # one batch: the first document padded by two positions
    n = 4 * C
    arr = feed(TopK(n + 3), docs, make_batches(rng, docs, 2)).arrays()
    assert np.isfinite(arr["topk_values"][:, :n]).all() and np.isnan(arr["topk_values"][:, n:]).all()
    assert (arr["topk_position"][:, n:] == -1).all()
    short = arr["topk_doc"][:, :n] == 0
    assert (arr["topk_position"][:, :n][short] == 0).all()  # nothing from its padded positions


def test_histogram_against_reference(data):
    docs, batches = data
    for d in docs:  # values on bin edges, zero, below and above the range
        d["hidden"][0][0, : 4] = [0.0, 1.0, 1e5, -1e-7]
    batches = make_batches(np.random.default_rng(9), docs, 2)
    arr = feed(Histogram(), docs, batches).arrays()
    np.testing.assert_array_equal(arr["hist_edges"], HIST_EDGES)
    for s in range(L + 2):
        x = np.abs(np.concatenate([d["hidden"][s].ravel() for d in docs]).astype(np.float64))
        ref = np.bincount(np.searchsorted(HIST_EDGES, x, side="right"), minlength=len(HIST_EDGES) + 1)
        np.testing.assert_array_equal(arr["hist_counts"][s], ref)


# ------------------------------------------------------------------------- lengths and the example document
class _RuleModel(torch.nn.Module):
    """Attention from a fixed rule: weight of key s for head h proportional to (id_s + h) % 3 over the real
    causal keys (rows without weight stay all zero, as softpick's); hidden states = scaled ids."""

    config = types.SimpleNamespace(attention_kind="rule", num_attention_heads=H)

    def forward(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False):
        B, T = input_ids.shape
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        w = torch.stack([((input_ids + h) % 3).double() for h in range(H)], 1)[:, :, None, :]  # [B, H, 1, S]
        w = (w * torch.tril(torch.ones(T, T, dtype=torch.float64)) * attention_mask[:, None, None, :]).float()
        w = w / w.sum(-1, keepdim=True).clamp_min(1e-30)
        h = input_ids[..., None].float() * torch.arange(1, C + 1)
        return types.SimpleNamespace(attentions=(w, w.flip(1)),
                                     hidden_states=(h,) * (L + 2) if output_hidden_states else None)


def _rule_reference(doc):
    n = len(doc)
    out = []
    for flip in (False, True):
        a = np.zeros((H, n, n))
        for hh in range(H):
            h = H - 1 - hh if flip else hh
            for t in range(n):
                w = np.array([(doc[s] + h) % 3 for s in range(t + 1)], dtype=np.float64)
                a[hh, t, : t + 1] = w / w.sum() if w.sum() else 0.0
        out.append(a)
    return out


def _context(max_len=10):
    rng = np.random.default_rng(10)
    docs = [np.concatenate([[1], rng.integers(3, 40, n)]) for n in (0, 3, 12, 7, 1)]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    cfg = {"max_len": max_len, "batch_size": 2, "pad_token_id": 0, "sink_eps": [0.2, 0.3], "zero_threshold": 1e-5}
    model = _RuleModel()
    context = AnalysisContext(model, tokens, offsets, load_docs(tokens, offsets, None), cfg)
    main = [SinkRate(cfg["sink_eps"]), Sparsity(cfg["zero_threshold"])]
    with torch.no_grad():
        context.main_stats = run_pass(model, context.docs, max_len, 2, 0, "cpu", main)
    context.main = {m.name: m for m in main}
    return context


def _reference_at(context, length):
    docs = [d[:length] for d in context.docs]
    refs = [_rule_reference(d) for d in docs]
    scores = np.array([[[r[l][h, :, 0].mean() for r in refs] for h in range(H)] for l in range(L)])
    tri = [r[l][h][np.tril_indices(len(d))] for r, d in zip(refs, docs) for l in range(L) for h in range(H)]
    tri = np.concatenate(tri)
    return scores, 100.0 * np.mean(tri == 0), sum(len(d) for d in docs)


def test_length_sweep_and_short_rate_against_reference():
    context = _context()
    sweep = LengthSweep([1, 10, 4], eps=[0.2, 0.3])
    short = SinkRateShort(4)
    with torch.no_grad():
        short.finish(context)
        sweep.finish(context)
    rows = sweep.result()["length_sweep"]
    assert [r["length"] for r in rows] == [1, 10, 4]
    for row in rows:
        scores, zero_pct, tokens = _reference_at(context, row["length"])
        assert row["num_tokens"] == tokens
        assert row["sink_rate"] == {f"{e:g}": pytest.approx(ref_rate(scores, e)) for e in (0.2, 0.3)}
        assert row["sparsity_exact_zero_pct"] == pytest.approx(zero_pct)
    scores, _, tokens = _reference_at(context, 4)
    got = short.result()["sink_rate_short"]
    assert got["length"] == 4 and got["num_tokens"] == tokens
    np.testing.assert_allclose(short.arrays()["sink_scores_short"], scores.astype(np.float32), rtol=1e-6)
    assert got["sink_rate"] == rows[2]["sink_rate"]  # one pass per length, shared
    assert context.cache[("attention", 10)]["sinks"] is context.main["sinks"]  # max_len: the main pass itself
    arr = sweep.arrays()
    assert arr["sweep_lengths"].tolist() == [1, 10, 4] and arr["sweep_sink_rate_0.3"].shape == (3,)


def test_short_rate_is_clamped_to_max_len_or_skipped():
    context = _context(max_len=6)
    clamped, skipped = SinkRateShort(64), SinkRateShort(None)
    with torch.no_grad():
        clamped.finish(context)
        skipped.finish(context)
    assert clamped.result()["sink_rate_short"]["length"] == 6
    assert clamped.result()["sink_rate_short"]["sink_rate"] == context.main["sinks"].rates()["sink_rate"]
    assert skipped.result() == {"sink_rate_short": None} and skipped.arrays() == {}
    assert LengthSweep([]).arrays() == {}


@pytest.mark.parametrize("doc, want", [(2, 2), (99, 4), (-3, 0)])
def test_example_document_against_reference(doc, want):
    context = _context(max_len=10)
    ex = ExampleDoc(doc, map_size=5)
    with torch.no_grad():
        ex.finish(context)
    ids = np.asarray(context.tokens[context.offsets[want]:context.offsets[want + 1]], dtype=np.int64)[:10]
    m = min(5, len(ids))
    assert ex.result() == {"example_doc": want, "example_len": len(ids)}
    arr = ex.arrays()
    ref = _rule_reference(ids)
    np.testing.assert_allclose(arr["attn_example"], np.stack([r[:, :m, :m] for r in ref]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(arr["example_tokens"], ids[:m])
    h = ids[:, None].astype(np.float64) * np.arange(1, C + 1)
    np.testing.assert_allclose(arr["hidden_max_abs_channel"], np.stack([np.abs(h).max(0)] * (L + 2)), rtol=1e-7)
    np.testing.assert_allclose(arr["hidden_max_abs_token"], np.stack([np.abs(h).max(1)] * (L + 2)), rtol=1e-7)


# --------------------------------------------------------------------------------------------- registry
def test_registry_builds_selected_metrics_in_order_and_names_unknown_ones():
    from softpick.analysis.registry import DEFAULT_CFG

    names = [m.name for m in build_metrics(DEFAULT_CFG, ["sparsity", "sinks"])]
    assert names == ["sinks", "sparsity"]
    with pytest.raises(ValueError, match=r"unknown analysis metric\(s\) \['kurtosis'\]"):
        build_metrics(DEFAULT_CFG, ["kurtosis"])
    for cls in METRICS.values():
        for line in cls.arrays_doc.splitlines():
            assert line in ARRAYS_DOC


def test_analyze_model_with_a_subset_reports_the_same_numbers():
    rng = np.random.default_rng(11)
    docs = [np.concatenate([[1], rng.integers(3, 40, n), [2]]) for n in (5, 0, 9, 3)]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])])
    cfg = {"max_len": 8, "batch_size": 3, "length_sweep": [3], "box_sample_size": 50}
    full, full_arr = analyze_model(_RuleModel(), tokens, offsets, cfg)
    part, part_arr = analyze_model(_RuleModel(), tokens, offsets, cfg, metrics=["moments", "sinks"])
    header = ["attention_kind", "num_docs", "num_tokens", "max_len", "num_layers", "num_heads"]
    assert list(part) == header + ["sink_eps", "sink_rate", "sink_rate_per_layer", "kurtosis",
                                   "kurtosis_hf_hidden_states", "min", "max", "max_abs", "mean", "std",
                                   "num_hidden_values", "hidden_state_names", "per_hidden_state", "config"]
    for k in part:
        assert part[k] == full[k] or (isinstance(part[k], float) and math.isnan(part[k]) and math.isnan(full[k])), k
    assert sorted(part_arr) == ["sink_scores", "sink_scores_mean"]
    assert full["dead_heads"] is None  # a model without o_proj modules
