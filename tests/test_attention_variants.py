"""The sink-free attention kinds against float64 evaluations of their formulas written here, independently:
every weight is computed with mpmath at 50 digits straight from the formula (no max-shift, no clamping),
so very large and very negative scores are checked against the true value, not a rearrangement of it."""
from __future__ import annotations

import json
import math
from pathlib import Path

import mpmath
import pytest
import torch

from softpick.attention import EPS, KINDS, attention, get_kind, resolve_backend
from softpick.model import SoftpickConfig, SoftpickForCausalLM

mpmath.mp.dps = 50
LEARNED = [k for k in KINDS if get_kind(k).has_params]


# ------------------------------------------------------------------ the formulas, one row at a time

def direct_row(kind: str, xs: list[float], sink: float = 0.0) -> list[float]:
    """Weights of one row of unmasked scores `xs` (Python floats) by the kind's formula."""
    e = [mpmath.e ** mpmath.mpf(x) for x in xs]
    if not xs:
        return []
    if kind in ("softmax", "gated"):
        den = sum(e)
        return [float(a / den) for a in e]
    if kind in ("softpick", "scaled_softpick"):
        den = sum(abs(a - 1) for a in e) + EPS
        return [float(max(a - 1, 0) / den) for a in e]
    if kind == "rectified_softmax":
        den = sum(a for a, x in zip(e, xs) if x > 0)
        return [float(a / den) if x > 0 else 0.0 for a, x in zip(e, xs)]
    if kind == "relu_softmax":
        den = sum(max(a - 1, 0) for a in e) + EPS
        return [float(max(a - 1, 0) / den) for a in e]
    if kind == "softmax_plus_one":
        den = 1 + sum(e)
        return [float(a / den) for a in e]
    if kind == "learned_sink":
        den = mpmath.e ** mpmath.mpf(sink) + sum(e)
        return [float(a / den) for a in e]
    raise AssertionError(kind)


def direct_weights(kind, scores, mask, sinks=None):
    """[B, H, T, S] weights from [B, H, T, S] scores and a [B, 1|H, T, S] boolean mask."""
    B, H, T, S = scores.shape
    mask = mask.expand(B, H, T, S)
    out = torch.zeros(B, H, T, S, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                cols = [s for s in range(S) if mask[b, h, t, s]]
                xs = [float(scores[b, h, t, s]) for s in cols]
                sink = float(sinks[h].detach()) if sinks is not None else 0.0
                for s, w in zip(cols, direct_row(kind, xs, sink)):
                    out[b, h, t, s] = w
    return out


def direct_attention(kind, q, k, v, pad, params=None, x=None):
    """The whole layer in float64: causal + padding mask, GQA by head index, the kind's extras."""
    B, T, H, D = q.shape
    S, Hkv = k.shape[1], k.shape[2]
    q, k, v = q.detach().double(), k.detach().double(), v.detach().double()
    if kind == "scaled_softpick":
        s_h = params.length_scale.detach().double()
        pos = torch.arange(S - T, S, dtype=torch.float64)
        q = q * torch.tensor([[math.log(p + 2) * float(s) for s in s_h] for p in pos.tolist()], dtype=torch.float64)[None, :, :, None]
    kk = k[:, :, [h * Hkv // H for h in range(H)]]
    vv = v[:, :, [h * Hkv // H for h in range(H)]]
    scores = torch.einsum("bthd,bshd->bhts", q, kk) / math.sqrt(D)
    causal = torch.tensor([[s <= t + S - T for s in range(S)] for t in range(T)])
    mask = causal[None, None] & pad.bool()[:, None, None, :]
    sinks = params.sink_logits.detach().double() if kind == "learned_sink" else None
    w = direct_weights(kind, scores, mask, sinks)
    out = torch.einsum("bhts,bshd->bthd", w, vv)
    if kind == "gated":
        gate = torch.sigmoid(x.detach().double() @ params.gate_proj.weight.detach().double().T)
        out = out * gate.view(B, T, H, D)
    return out, w


# ------------------------------------------------------------------ helpers

def tiny_config(kind, **kw):
    base = dict(vocab_size=61, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=48, max_position_embeddings=64, initializer_range=0.05, attention_kind=kind)
    base.update(kw)
    return SoftpickConfig(**base)


def kind_inputs(kind, B=2, T=7, S=None, H=4, Hkv=2, D=8, scale=1.5, seed=0, dtype=torch.float64):
    """q, k, v, params (random non-default values), layer input x [B, T, H * D]."""
    S = S or T
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, T, H, D, generator=g, dtype=dtype) * scale).requires_grad_()
    k = (torch.randn(B, S, Hkv, D, generator=g, dtype=dtype) * scale).requires_grad_()
    v = torch.randn(B, S, Hkv, D, generator=g, dtype=dtype).requires_grad_()
    x = torch.randn(B, T, H * D, generator=g, dtype=dtype).requires_grad_()
    params = get_kind(kind).make_params(tiny_config(kind, hidden_size=H * D, num_attention_heads=H,
                                                    num_key_value_heads=Hkv))
    if params is not None:
        params = params.to(dtype)
        with torch.no_grad():
            for p in params.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=dtype) * (0.3 if p.dim() > 1 else 1.0) + 0.2)
    return q, k, v, params, x


def run(kind, q, k, v, params, x, pad=None, weights=False, backend="torch"):
    return attention(q, k, v, kind=kind, attention_mask=pad, return_weights=weights, backend=backend,
                     params=params, layer_input=x)


# ------------------------------------------------------------------ values

@pytest.mark.parametrize("kind", KINDS)
def test_attention_matches_direct_formula(kind):
    q, k, v, params, x = kind_inputs(kind, scale=2.0)
    pad = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    ref_out, ref_w = direct_attention(kind, q, k, v, pad, params, x)
    out_w, w = run(kind, q, k, v, params, x, pad, weights=True)  # the materialised reference
    out_fast, none = run(kind, q, k, v, params, x, pad)  # the CPU fast path (SDPA / fused softpick / reference)
    assert none is None
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(out_w, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out_fast, ref_out, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_decoding_offset_queries(kind):
    """Fewer queries than keys (a KV cache): causal alignment and scaled softpick's positions follow S - T."""
    q, k, v, params, x = kind_inputs(kind, T=3, S=8, seed=4)
    pad = torch.ones(2, 8, dtype=torch.long)
    ref_out, ref_w = direct_attention(kind, q, k, v, pad, params, x)
    out, w = run(kind, q, k, v, params, x, weights=True)
    fast, _ = run(kind, q, k, v, params, x)  # SDPA's is_causal alone would align the first query with key 0
    torch.testing.assert_close(w, ref_w, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(fast, ref_out, rtol=1e-10, atol=1e-12)


ADVERSARIAL = torch.tensor([
    [-150.0, -200.0, -120.0, -101.0, -1000.0],   # every score far below zero
    [85.0, 90.0, -300.0, 81.0, 700.0],           # far above: one dominates
    [-0.5, -1.0, -2.0, -0.1, -1e-9],             # all slightly negative
    [1e4, -1e4, 0.5, 1e-9, -3.0],                # extreme of both signs
    [0.3, -0.2, 1.5, 2.0, -0.7],                 # ordinary
], dtype=torch.float64)


@pytest.mark.parametrize("kind", KINDS)
def test_very_negative_and_very_positive_scores(kind):
    spec = get_kind(kind)
    params = spec.make_params(tiny_config(kind, num_attention_heads=1, num_key_value_heads=1, hidden_size=8))
    params = params.double() if params is not None else None
    scores = ADVERSARIAL[None, None].clone().requires_grad_()
    mask = torch.ones(1, 1, 5, 5, dtype=torch.bool)
    mask[0, 0, 4, 3:] = False  # a partly masked row
    w = spec.weights(scores, mask, params)
    assert torch.isfinite(w).all()
    sinks = params.sink_logits.double() if kind == "learned_sink" else None
    torch.testing.assert_close(w, direct_weights(kind, scores.detach(), mask, sinks), rtol=1e-10, atol=1e-14)
    # the limits: rows far below zero give weight 0 for every sink-free kind, softmax spreads over them
    if kind in ("softmax", "gated"):
        torch.testing.assert_close(w[0, 0, 0].sum(), torch.tensor(1.0, dtype=torch.float64))
    else:
        assert w[0, 0, 0].abs().max() < 1e-40
    if kind in ("softpick", "scaled_softpick", "rectified_softmax", "relu_softmax"):
        assert (w[0, 0, 2] == 0).all()  # no positive score: exactly 0
    # one score far above the rest takes (almost) all the weight
    assert w[0, 0, 1, 4] > 1 - 1e-6 and w[0, 0, 3, 0] > 1 - 1e-6
    assert (w.sum(-1) <= 1 + 1e-12).all()
    w.backward(torch.randn_like(w))
    assert torch.isfinite(scores.grad).all()


@pytest.mark.parametrize("kind", KINDS)
def test_fully_masked_rows_give_zero_with_finite_gradients(kind):
    q, k, v, params, x = kind_inputs(kind, T=5, seed=2)
    with torch.no_grad():
        q[1] *= 40.0  # huge scores of both signs
    pad = torch.tensor([[0] * 5, [1, 1, 1, 0, 0]])  # sample 0 fully padded
    for weights in (True, False):
        out, w = run(kind, q, k, v, params, x, pad, weights=weights)
        assert torch.isfinite(out).all()
        assert out[0].abs().sum() == 0
        if w is not None:
            assert w[0].abs().sum() == 0 and torch.isfinite(w).all()
        grads = torch.autograd.grad(out.sum(), [q, k, v, x] + (list(params.parameters()) if params else []),
                                    allow_unused=True)
        assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_matches_trimmed_sequence(kind):
    q, k, v, params, x = kind_inputs(kind, B=1, T=8, seed=3)
    pad = torch.tensor([[1] * 6 + [0] * 2])
    o_pad, _ = run(kind, q, k, v, params, x, pad)
    o_trim, _ = run(kind, q[:, :6], k[:, :6], v[:, :6], params, x[:, :6])
    torch.testing.assert_close(o_pad[:, :6], o_trim, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_gqa_equals_repeated_heads(kind):
    q, k, v, params, x = kind_inputs(kind, H=4, Hkv=1, seed=5)
    o_gqa, w_gqa = run(kind, q, k, v, params, x, weights=True)
    o_mha, w_mha = run(kind, q, k.repeat_interleave(4, 2), v.repeat_interleave(4, 2), params, x, weights=True)
    torch.testing.assert_close(o_gqa, o_mha)
    torch.testing.assert_close(w_gqa, w_mha)


# ------------------------------------------------------------------ gradients

@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_float64(kind):
    q, k, v, params, x = kind_inputs(kind, B=1, T=5, H=2, Hkv=1, D=4, seed=6)
    pad = torch.tensor([[1, 1, 1, 1, 0]])
    names = [f"params.{n}" for n, _ in params.named_parameters()] if params is not None else []
    leaves = [p.detach().clone().requires_grad_() for p in params.parameters()] if params is not None else []

    class Layer(torch.nn.Module):  # so torch.func.functional_call can swap the kind's parameters for gradcheck's
        def __init__(self):
            super().__init__()
            self.params = params

        def forward(self, q, k, v, x):
            return run(kind, q, k, v, self.params, x, pad)[0]

    layer = Layer()

    def fn(q, k, v, x, *ps):
        return torch.func.functional_call(layer, dict(zip(names, ps)), (q, k, v, x))

    assert torch.autograd.gradcheck(fn, (q, k, v, x, *leaves), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", LEARNED)
def test_learned_parameters_get_gradients_and_round_trip(kind, tmp_path):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = SoftpickForCausalLM(tiny_config(kind))
    ids = torch.randint(0, 61, (2, 16))
    model(ids, labels=ids).loss.backward()
    named = {n: p for n, p in model.named_parameters() if ".kind_params." in n}
    assert len(named) == 2  # one per layer
    for n, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, n
    with torch.no_grad():  # move them off their initial values so the round trip has something to carry
        for p in named.values():
            p.add_(torch.randn_like(p) * 0.1)
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.config.attention_kind == kind
    for n, p in loaded.named_parameters():
        if n in named:
            torch.testing.assert_close(p, named[n], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_initial_values_of_learned_parameters():
    """s_h starts at the authors' 0.3, sink logits at 0 (= softmax+1), the gate like every linear (std 0.006)."""
    scaled = SoftpickForCausalLM(tiny_config("scaled_softpick", initializer_range=0.006))
    assert all((layer.self_attn.kind_params.length_scale == 0.3).all() for layer in scaled.model.layers)
    sink = SoftpickForCausalLM(tiny_config("learned_sink", initializer_range=0.006))
    assert all((layer.self_attn.kind_params.sink_logits == 0).all() for layer in sink.model.layers)
    gate = SoftpickForCausalLM(tiny_config("gated", initializer_range=0.006)).model.layers[0].self_attn.kind_params
    assert abs(gate.gate_proj.weight.std().item() - 0.006) < 0.001
    plain = SoftpickForCausalLM(tiny_config("softpick"))
    assert plain.model.layers[0].self_attn.kind_params is None


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_model_of_each_kind_trains(kind):
    torch.manual_seed(0)
    model = SoftpickForCausalLM(tiny_config(kind, initializer_range=0.02))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.arange(33).remainder(7)[None].repeat(4, 1)  # a periodic sequence: learnable in a few steps
    losses = []
    for _ in range(8):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0] - 0.5
    out = model(ids, output_attentions=True)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (4, 4, 33, 33)


# ------------------------------------------------------------------ dispatch and registry

def test_dispatch_errors_name_the_kind():
    q, k, v, params, x = kind_inputs("gated")
    with pytest.raises(ValueError, match="needs layer_input"):
        attention(q, k, v, kind="gated", params=params)
    with pytest.raises(ValueError, match="learned parameters"):
        attention(q, k, v, kind="learned_sink")
    with pytest.raises(ValueError, match="softpick weights only, not 'learned_sink'"):
        resolve_backend("triton", "learned_sink", q.device, False, False)
    assert resolve_backend("auto", "scaled_softpick", torch.device("cpu"), False, False) == "torch"
    assert resolve_backend("triton", "scaled_softpick", torch.device("cpu"), False, False) == "triton"
    with pytest.raises(ValueError, match="attention_kind 'sparsemax' is not one of"):
        SoftpickConfig(attention_kind="sparsemax")


def test_registry_schema_and_figure_style_agree():
    from softpick.figures.style import color, label_of

    from softpick.schema import load_schema

    assert load_schema()["properties"]["variants"]["items"]["enum"] == list(KINDS)  # filled from the registry
    assert {k: get_kind(k).label for k in KINDS} == {k: label_of(k) for k in KINDS}
    assert all(get_kind(k).color and get_kind(k).label for k in KINDS)  # every kind has its colour and label
    assert len({color(k) for k in KINDS}) == len(KINDS)


def test_config_accepts_every_kind_in_variants():
    from softpick.config import load_config

    config = load_config(overrides=[f"variants=[{', '.join(KINDS)}]"])
    assert config["variants"] == list(KINDS)


def test_scaled_softpick_through_the_triton_kernel():
    """The scaled kind's fast path is the softpick kernel on the scaled queries (interpreter on CPU)."""
    pytest.importorskip("triton")
    if not torch.cuda.is_available():
        import os

        if os.environ.get("TRITON_INTERPRET") != "1":
            pytest.skip("triton was imported without the interpreter")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    q, k, v, params, x = kind_inputs("scaled_softpick", B=1, T=20, H=2, Hkv=1, D=16, seed=7, dtype=torch.float32)
    q, k, v, params = q.to(device), k.to(device), v.to(device), params.to(device)
    out, _ = run("scaled_softpick", q, k, v, params, None, backend="triton")
    ref, _ = direct_attention("scaled_softpick", q.cpu(), k.cpu(), v.cpu(), torch.ones(1, 20), params.cpu())
    assert ((out.double().cpu() - ref).norm() / ref.norm()).item() < 1e-4
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, params.length_scale), g)
    ref_grads = torch.autograd.grad(run("scaled_softpick", q, k, v, params, None)[0], (q, params.length_scale), g)
    for a, b in zip(grads, ref_grads):
        assert ((a - b).norm() / b.norm()).item() < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU fast paths (bf16) need CUDA")
@pytest.mark.parametrize("kind", KINDS)
def test_bf16_fast_path_on_gpu_matches_float64(kind):
    """Each kind's auto path under bf16 autocast on CUDA (Triton for the softpick kinds, SDPA for softmax /
    gated, the reference otherwise) against the float64 formula."""
    q, k, v, params, x = kind_inputs(kind, B=1, T=160, H=4, Hkv=2, D=64, scale=0.5, seed=8, dtype=torch.float32)
    ref, _ = direct_attention(kind, q, k, v, torch.ones(1, 160), params, x)
    dev = [t.detach().cuda().requires_grad_() for t in (q, k, v, x)]
    params = params.cuda() if params is not None else None
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out, _ = attention(*dev[:3], kind=kind, backend="auto", params=params, layer_input=dev[3])
    assert ((out.double().cpu() - ref).norm() / ref.norm()).item() < 2.5e-2
    out.float().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in dev)


# ------------------------------------------------------------------ the Table 3 writer

def test_variants_table_reads_every_field_and_tolerates_missing_ones(tmp_path):
    from softpick.figures.variants_table import write_variants_table

    def dump(name, obj):
        path = tmp_path / name
        path.write_text(json.dumps(obj))
        return path

    full = dump("a.json", {"sink_rate": {"0.2": 12.5, "0.3": 7.25}, "kurtosis": 1234.5, "min": -40.5, "max": 55.25,
                           "sparsity": {"exact_zero_pct": 91.5}, "sink_rate_short": {"length": 64, "sink_rate": {"0.2": 33.5, "0.3": 21.0}},
                           "dead_heads": {"pct": {"1e-06": 18.75, "0.01": 40.0}}})
    sweep_only = dump("b.json", {"sink_rate": {"0.2": 0.0, "0.3": 0.0}, "kurtosis": 10.0, "min": -1.0, "max": 2.0,
                                 "sparsity": {"exact_zero_pct": 0.5},
                                 "length_sweep": [{"length": 16, "sink_rate": {"0.2": 9.0, "0.3": 9.0}},
                                                  {"length": 64, "sink_rate": {"0.2": 4.5, "0.3": 3.5}}]})
    passkey = dump("p.json", {"accuracy_by_length": {"128": 95.0, "256": 40.0, "512": 0.0}})
    summary = dump("s.json", {"final_val_loss": 2.4567})
    paths = write_variants_table({"learned_sink": full, "softpick": sweep_only}, tmp_path / "variants_table",
                                 passkey_paths={"learned_sink": passkey}, train_summary_paths={"learned_sink": summary})
    md = (tmp_path / "variants_table.md").read_text()
    assert [p.name for p in paths] == ["variants_table.md", "variants_table.tex"]
    rows = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| ")}
    sink = rows["learned sink (GPT-OSS) (ours)"]
    for cell in ("12.50 / 7.25", "33.50 / 21.00", "1,234.5", "-40.50", "55.25", "91.50", "18.75", "2.46",
                 "95.0 / 40.0 / 0.0"):
        assert f" {cell} " in sink, cell
    pick = rows["softpick (ours)"]
    assert " 4.50 / 3.50 " in pick  # T = 64 from the length sweep
    assert pick.count(" — ") == 4  # L = 256, dead heads, val loss and passkey not measured
    assert "128/256/512 prompt tokens" in md
    paper = rows["softmax (paper v4, 340M, 10k steps) †"]
    cells = [c.strip() for c in paper.strip("| ").split(" | ")]
    assert cells[1:4] == ["—", "47.97 / 34.89", "—"]  # Table 3 is the authors' sweep at L = 256
    assert " 6,452.7 " in paper and " 95.5 / 97 / 73 / 70.5 / 0 " in paper
    assert " 17.19 " in rows["softpick (paper v4, 340M, 10k steps) †"]
    assert sum("paper v4" in r for r in rows) == len(KINDS)
    assert r"\label{tab:variants}" in (tmp_path / "variants_table.tex").read_text()
