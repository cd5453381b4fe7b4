"""Regression fixture of analyze_model: the summary and arrays of three small deterministic models,
written by the analysis before it was split into accumulators (tests/data/analysis_golden.*).

The models' weights are stored in the fixture (not regenerated from a seed), so the numbers do not
depend on torch's initialisation. Keys, key order, integers and dtypes must match exactly, floats to
rtol 1e-6. Regenerate only on purpose (a deliberate change of a metric):
    PYTHONPATH=src python tests/test_analysis_golden.py --write
"""
from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

GOLDEN_JSON = Path(__file__).parent / "data" / "analysis_golden.json"
GOLDEN_NPZ = Path(__file__).parent / "data" / "analysis_golden.npz"
RTOL, ATOL = 1e-6, 1e-12

BASE_CFG = dict(num_docs=10, max_len=24, batch_size=3, sink_eps=[0.2, 0.3], zero_threshold=1e-5, example_doc=1,
                length_sweep=[2, 13, 24], sink_short_len=5, topk=5, map_size=16, box_sample_size=300, box_seed=3,
                dead_head_eps=[1e-6, 1e-2, 0.1], dead_head_token_fraction=0.5)
CASES = {
    # GQA, an awkward last batch (10 docs in 3s), a length-1 document, sweep lengths 2 / 13 / max_len
    "softmax": dict(kind="softmax", cfg=BASE_CFG),
    # a zeroed head, EOS dropped, the example index clamped, the short length clamped to max_len, exact box sample
    "softpick": dict(kind="softpick", cfg={**BASE_CFG, "batch_size": 4, "keep_eos": False, "example_doc": 99,
                                          "length_sweep": [24, 7], "sink_short_len": 64, "box_sample_size": 10**5}),
    # no o_proj (dead heads None), all mass on token 0, all-zero attention rows, constant hidden states
    "stub": dict(kind="stub", cfg={**BASE_CFG, "length_sweep": [], "sink_short_len": None}),
}


def golden_data():
    """12 documents of lengths 1, 2 and 3..40 ([BOS] ids [EOS], BOS = 1, EOS = 2)."""
    rng = np.random.default_rng(11)
    docs = [np.array([1]), np.array([1, 2])]
    docs += [np.concatenate([[1], rng.integers(3, 32, rng.integers(1, 39)), [2]]) for _ in range(10)]
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    tokens = np.concatenate(docs).astype(np.uint16)
    offsets = np.concatenate([[0], np.cumsum([len(d) for d in docs])]).astype(np.int64)
    return tokens, offsets


class StubModel(torch.nn.Module):
    """Layer 0 puts all weight on key 0, layer 1 returns all-zero rows (as softpick can), layer 2 is
    uniform over the real causal keys; every hidden state is the constant 0.5 (zero variance)."""

    def forward(self, input_ids, attention_mask=None, output_attentions=False, output_hidden_states=False):
        B, T = input_ids.shape
        keys = attention_mask[:, None, None, :].float()
        sink = torch.zeros(B, 2, T, T)
        sink[..., 0] = 1.0
        causal = torch.tril(torch.ones(T, T)).expand(B, 2, T, T) * keys
        uniform = causal / causal.sum(-1, keepdim=True).clamp_min(1.0)
        h = torch.full((B, T, 8), 0.5)
        return types.SimpleNamespace(attentions=(sink * keys, torch.zeros(B, 2, T, T), uniform),
                                     hidden_states=(h,) * 5 if output_hidden_states else None)


def _config(kind):
    from softpick.model import SoftpickConfig

    return SoftpickConfig(vocab_size=32, hidden_size=16, num_hidden_layers=3, num_attention_heads=4,
                          num_key_value_heads=2, intermediate_size=24, initializer_range=0.3, attention_kind=kind,
                          max_position_embeddings=64)


def make_model(kind, weights: dict | None = None):
    """The case's model: fresh (seeded) when writing the fixture, else with the stored weights."""
    if kind == "stub":
        return StubModel()
    from softpick.model import SoftpickForCausalLM

    torch.manual_seed(5)
    model = SoftpickForCausalLM(_config(kind))
    if weights is None:
        if kind == "softpick":
            with torch.no_grad():  # layer 1, kv head 1 (query heads 2 and 3): zero values, a dead head
                model.model.layers[1].self_attn.v_proj.weight[4:8] = 0.0
    else:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


def _clean(summary):
    from softpick.analysis import _json_clean

    return json.loads(json.dumps(_json_clean(summary), allow_nan=False))


def _stored_weights(arrays: dict, case):
    prefix = f"weights/{case}/"
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def _assert_same(got, want, path="summary"):
    assert type(got) is type(want) or (isinstance(got, (int, float)) and isinstance(want, (int, float))
                                       and not isinstance(got, bool) and not isinstance(want, bool)), \
        f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for k in want:
            _assert_same(got[k], want[k], f"{path}.{k}")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{path}[{i}]")
    elif isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, float) and isinstance(want, float), f"{path}: {got!r} vs {want!r} (int / float)"
        assert math.isclose(got, want, rel_tol=RTOL, abs_tol=ATOL), f"{path}: {got!r} != {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


@pytest.fixture(scope="module")
def golden():
    with np.load(GOLDEN_NPZ) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return json.loads(GOLDEN_JSON.read_text()), arrays


def test_fixture_is_small():
    assert GOLDEN_JSON.stat().st_size + GOLDEN_NPZ.stat().st_size < 200_000


@pytest.mark.parametrize("case", list(CASES))
def test_analysis_matches_golden(golden, case):
    from softpick.analysis import analyze_model

    summaries, stored = golden
    spec = CASES[case]
    model = make_model(spec["kind"], _stored_weights(stored, case) or None)
    tokens, offsets = golden_data()
    summary, arrays = analyze_model(model, tokens, offsets, spec["cfg"], "cpu")
    _assert_same(_clean(summary), summaries[case])
    prefix = f"{case}/"
    want = {k[len(prefix):]: v for k, v in stored.items() if k.startswith(prefix)}
    assert sorted(arrays) == sorted(want)
    for k, w in want.items():
        g = np.asarray(arrays[k])
        assert g.dtype == w.dtype and g.shape == w.shape, f"{case}/{k}: {g.dtype}{g.shape} != {w.dtype}{w.shape}"
        if np.issubdtype(w.dtype, np.floating):
            np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=f"{case}/{k}")
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{case}/{k}")


def write_golden():
    from softpick.analysis import analyze_model

    tokens, offsets = golden_data()
    summaries, arrays = {}, {}
    for case, spec in CASES.items():
        model = make_model(spec["kind"])
        summary, arr = analyze_model(model, tokens, offsets, spec["cfg"], "cpu")
        summaries[case] = _clean(summary)
        arrays.update({f"{case}/{k}": np.asarray(v) for k, v in arr.items()})
        if spec["kind"] != "stub":
            arrays.update({f"weights/{case}/{k}": v.detach().numpy() for k, v in model.state_dict().items()})
    GOLDEN_JSON.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN_JSON.write_text(json.dumps(summaries, indent=1, allow_nan=False) + "\n")
    np.savez_compressed(GOLDEN_NPZ, **arrays)
    print(f"wrote {GOLDEN_JSON} ({GOLDEN_JSON.stat().st_size} B), {GOLDEN_NPZ} ({GOLDEN_NPZ.stat().st_size} B)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit(__doc__)
    write_golden()
