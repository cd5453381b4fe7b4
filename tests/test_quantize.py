"""softpick.quantize: every registered method on a small trained model, GPTQ and int8 activations against
float64 references, adversarial weights, the config grid and quantize_and_evaluate."""
from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

pytest.importorskip("hqq")
pytest.importorskip("bitsandbytes")

from softpick.model import SoftpickConfig, SoftpickForCausalLM  # noqa: E402
from softpick.quantize import (METHODS, check_method, dequantized_weight, linear_layers,  # noqa: E402
                               quantize_jobs, quantize_model)
from softpick.quantize.activation import fake_quantize_int8  # noqa: E402
from softpick.quantize.gptq import gptq_quantize_weight, output_rel_error  # noqa: E402
from softpick.quantize.rtn import GroupQuantLinear, rtn_quantize_weight  # noqa: E402

PAIRS = [(m, b) for m, spec in METHODS.items() for b in spec.bits]
GROUP = 32
VOCAB = 64
# ||W - Ŵ|| / ||W|| bounds by bits for Gaussian-like weights in groups of 32 (min-max RTN gives
# about range / (2^b - 1) / sqrt(12) / std ≈ 4.2 / (2^b - 1) / 3.5)
REL_ERROR_BOUND = {8: 0.01, 4: 0.16, 3: 0.3, 2: 0.65}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one torch thread is fastest (and avoids oversubscribing shared cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------ a small trained model
SUCCESSORS = torch.from_numpy(np.random.default_rng(1234).integers(0, VOCAB, size=(VOCAB, 3)))
TRANSITION = torch.zeros(VOCAB, VOCAB, dtype=torch.float64)  # the chain's exact next-token distribution
for _k in range(3):
    TRANSITION[torch.arange(VOCAB), SUCCESSORS[:, _k]] += 1 / 3


def markov_batch(n: int, length: int, seed: int) -> torch.Tensor:
    """Token sequences of a fixed sparse Markov chain (each token has 3 equally likely successor draws)."""
    g = torch.Generator().manual_seed(seed)
    seq = torch.empty(n, length, dtype=torch.long)
    seq[:, 0] = torch.randint(0, VOCAB, (n,), generator=g)
    for t in range(1, length):
        seq[:, t] = SUCCESSORS[seq[:, t - 1], torch.randint(0, 3, (n,), generator=g)]
    return seq


def perplexity(model, seqs: torch.Tensor) -> float:
    """exp of the cross-entropy against the chain's exact next-token distribution (no sampling noise),
    so no model, quantized or not, can beat the chain's own entropy."""
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=seqs).logits[:, :-1].double(), dim=-1)
    return math.exp(-(TRANSITION[seqs[:, :-1]] * logp).sum(-1).mean().item())


CHAIN_PPL = math.exp(-(TRANSITION * torch.log(TRANSITION.clamp_min(1e-300))).sum(-1).mean().item())


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    cfg = SoftpickConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=160, attention_kind="softpick", max_position_embeddings=64,
                         initializer_range=0.05)
    model = SoftpickForCausalLM(cfg)
    steps = 150
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    for step in range(steps):
        x = markov_batch(16, 32, seed=step)
        loss = F.cross_entropy(model(input_ids=x).logits[:, :-1].reshape(-1, VOCAB), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    held_out = markov_batch(32, 32, seed=10_000)
    calib = markov_batch(8, 32, seed=20_000)
    float_ppl = perplexity(model, held_out)
    assert CHAIN_PPL <= float_ppl < CHAIN_PPL * 1.05, (float_ppl, CHAIN_PPL)  # near the optimum (uniform: 64)
    return model, held_out, calib, float_ppl


@pytest.fixture(scope="module")
def quantized(trained):
    model, _, calib, _ = trained
    return {(m, b): quantize_model(model, method=m, bits=b, group_size=GROUP, quantize_lm_head=False, calibration=calib)
            for m, b in PAIRS}


# ------------------------------------------------------------------ every method
@pytest.mark.parametrize("method,bits", PAIRS)
def test_weight_error_against_float64(trained, quantized, method, bits):
    model, *_ = trained
    qmodel, stats = quantized[(method, bits)]
    assert stats["method"] == method and stats["bits"] == bits and stats["n_layers"] == 14
    assert stats["settings"] == {**METHODS[method].settings}
    for name, lin in linear_layers(model, quantize_lm_head=False):
        w = lin.weight.detach().double()
        w_hat = dequantized_weight(qmodel.get_submodule(name)).double()
        err = float((w - w_hat).norm() / w.norm())
        assert err == pytest.approx(stats["per_layer"][name]["rel_error"], rel=1e-9, abs=1e-12)
        # GPTQ trades weight error for output error on the calibration inputs: a looser bound
        assert 0 < err < REL_ERROR_BOUND[bits] * (2 if method == "gptq" else 1), (name, err)
    errs = {b: quantized[(method, b)][1]["mean_rel_error"] for b in METHODS[method].bits}
    assert sorted(errs, key=errs.get) == sorted(errs, reverse=True), errs  # more bits, less error


def test_rtn_elementwise_bound(trained, quantized):
    """Round-to-nearest: every weight within half a step of its group's grid, the extremes exact."""
    model, *_ = trained
    for bits in (8, 4, 3, 2):
        qmodel, _ = quantized[("rtn", bits)]
        for name, lin in linear_layers(model, False):
            q = qmodel.get_submodule(name)
            w, w_hat = lin.weight.detach().double(), q.dequantize().double()
            step = q.scale.double()[:, q.gidx]
            assert ((w - w_hat).abs() <= step / 2 * (1 + 1e-5) + 1e-7).all(), name
            for g in range(q.scale.shape[1]):
                cols = q.gidx == g
                torch.testing.assert_close(w_hat[:, cols].amin(1), w[:, cols].amin(1), rtol=0, atol=1e-6)
                torch.testing.assert_close(w_hat[:, cols].amax(1), w[:, cols].amax(1), rtol=0, atol=1e-6)


def test_stored_bits_per_parameter(quantized):
    # q/k/v/o: 64 x 64, gate/up: 160 x 64, down: 64 x 160 (groups of 32 divide every row)
    for bits in (8, 4, 3, 2):
        assert quantized[("rtn", bits)][1]["bits_per_param"] == pytest.approx(bits + 64 / GROUP)
        act = [m for m in METHODS if m.startswith("rtn_a8")]
        for m in act:
            if bits in METHODS[m].bits:
                assert quantized[(m, bits)][1]["bits_per_param"] == pytest.approx(bits + 64 / GROUP)
        # GPTQ with act-order also keeps an int32 group index per input column
        pl = quantized[("gptq", bits)][1]["per_layer"]
        for name, v in pl.items():
            out_f, in_f = v["shape"]
            assert v["bits_per_param"] == pytest.approx(bits + 64 / GROUP + 32 / out_f), name
        hqq = quantized[("hqq", bits)][1]["bits_per_param"]
        assert bits + 64 / GROUP <= hqq <= bits + 64 / GROUP + 0.5  # 3-bit codes pack 10 per int32
    for m in ("bnb", "bnb_fp4"):
        assert quantized[(m, 4)][1]["bits_per_param"] == pytest.approx(4 + 32 / GROUP)  # uint8 pairs + fp32 absmax
    for name, v in quantized[("bnb", 8)][1]["per_layer"].items():
        assert v["bits_per_param"] == pytest.approx(8 + 32 / v["shape"][1]), name  # int8 + fp32 per-row scale


@pytest.mark.parametrize("method,bits", PAIRS)
def test_perplexity_not_below_float_and_deterministic(trained, quantized, method, bits):
    model, held_out, calib, float_ppl = trained
    qmodel, stats = quantized[(method, bits)]
    ppl = perplexity(qmodel, held_out)
    # the float model is within 1% of the optimum: quantization noise can only cost (up to 1e-3 of
    # luck for calibrated GPTQ at 4+ bits), and more at fewer bits
    assert ppl >= CHAIN_PPL and ppl >= float_ppl * (1 - 1e-3), (ppl, float_ppl)
    assert ppl < float_ppl * {8: 1.002, 4: 1.01, 3: 1.02, 2: 1.1}[bits], (ppl, float_ppl)
    if bits <= 3:
        assert ppl > float_ppl * (1.0005 if bits == 3 else 1.005), (ppl, float_ppl)
    again, stats2 = quantize_model(model, method=method, bits=bits, group_size=GROUP, calibration=calib)
    assert stats2["per_layer"] == stats["per_layer"]
    with torch.no_grad():
        assert torch.equal(again(input_ids=held_out[:4]).logits, qmodel(input_ids=held_out[:4]).logits)


def test_input_model_untouched_and_layers_replaced(trained, quantized):
    model, *_ = trained
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 15
    for (method, bits), (qmodel, stats) in quantized.items():
        assert "lm_head" not in stats["per_layer"] and isinstance(qmodel.lm_head, nn.Linear)
        assert not any(type(m) is nn.Linear for n, m in qmodel.named_modules() if n != "lm_head"), method
    qmodel, stats = quantize_model(model, method="rtn", bits=4, group_size=GROUP, quantize_lm_head=True)
    assert "lm_head" in stats["per_layer"] and isinstance(qmodel.lm_head, GroupQuantLinear)


def test_gptq_beats_rtn_on_calibration_inputs(quantized):
    for bits in (8, 4, 3, 2):
        pl = quantized[("gptq", bits)][1]["per_layer"]
        g = [v["calib_output_rel_error"] for v in pl.values()]
        r = [v["rtn_calib_output_rel_error"] for v in pl.values()]
        assert sum(g) < sum(r), (bits, g, r)
        if bits <= 4:
            assert all(a < b for a, b in zip(g, r)), (bits, g, r)


def test_unsupported_pairs_fail_before_work(trained):
    model, *_ = trained
    for method, bits in (("bnb", 2), ("bnb", 3), ("bnb_fp4", 8), ("rtn_a8_token", 2), ("hqq", 5), ("rtn", 16)):
        with pytest.raises(ValueError, match=f"{method}: bits must be one of"):
            quantize_model(model, method=method, bits=bits, group_size=GROUP)
    with pytest.raises(ValueError, match="unknown quantization method 'awq'"):
        quantize_model(model, method="awq", bits=4, group_size=GROUP)
    for b in (4.0, True, "4"):
        with pytest.raises(ValueError, match="bits must be one of"):
            check_method("rtn", b, 64)
    with pytest.raises(ValueError, match="power of two"):
        check_method("rtn", 4, 48)
    with pytest.raises(ValueError, match="bnb: group_size must be one of"):
        check_method("bnb", 4, 16)
    with pytest.raises(ValueError, match="calibration"):
        quantize_model(model, method="gptq", bits=4, group_size=GROUP)


def test_quantize_jobs_grid():
    cfg = {"methods": ["rtn", "bnb", "gptq"], "bits": [4, 2], "group_size": 64, "bits_by_method": {"bnb": [8, 4]}}
    assert quantize_jobs(cfg) == [("rtn", 4), ("rtn", 2), ("bnb", 8), ("bnb", 4), ("gptq", 4), ("gptq", 2)]
    with pytest.raises(ValueError, match=r"\(bnb, 2\).*\n.*\(bnb_fp4, 2\)"):
        quantize_jobs({"methods": ["rtn", "bnb", "bnb_fp4"], "bits": [4, 2], "group_size": 64})
    # entries for methods that are not run are ignored (configs are merged over the default)
    assert quantize_jobs({"methods": ["rtn"], "bits": [4], "group_size": 64, "bits_by_method": {"bnb": [8]}}) == [("rtn", 4)]


# ------------------------------------------------------------------ adversarial weights
def adversarial_model():
    torch.manual_seed(3)
    cfg = SoftpickConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=128, attention_kind="softpick", max_position_embeddings=64)
    model = SoftpickForCausalLM(cfg).eval()
    att, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    with torch.no_grad():
        att.q_proj.weight[:, [3, 10]] *= 300.0                  # outlier input columns (group 0)
        att.k_proj.weight[:, :GROUP] = 0.125                    # constant groups
        att.k_proj.weight[5, :] = -0.5                          # a constant row
        att.v_proj.weight.zero_()                               # all zeros
        mlp.up_proj.weight[:, GROUP:2 * GROUP] = 0.0            # zero groups
        mlp.down_proj.weight[7] = torch.linspace(-1, 1, 128)    # an evenly spaced row
    return model


@pytest.mark.parametrize("method,bits", PAIRS)
def test_adversarial_weights(method, bits):
    model = adversarial_model()
    calib = markov_batch(4, 16, seed=5)
    qmodel, stats = quantize_model(model, method=method, bits=bits, group_size=GROUP, calibration=calib)
    ref = dict(linear_layers(model, False))
    for name in ref:
        w_hat = dequantized_weight(qmodel.get_submodule(name))
        assert torch.isfinite(w_hat).all(), name
    assert stats["per_layer"]["model.layers.0.self_attn.v_proj"]["rel_error"] == 0.0  # zeros stay zeros
    with torch.no_grad():
        assert torch.isfinite(qmodel(input_ids=calib).logits).all()
    if method.startswith("rtn"):
        k_hat = dequantized_weight(qmodel.get_submodule("model.layers.0.self_attn.k_proj"))
        rows = [r for r in range(k_hat.shape[0]) if r != 5]
        assert torch.equal(k_hat[rows, :GROUP], torch.full_like(k_hat[rows, :GROUP], 0.125))
        assert torch.equal(k_hat[5], torch.full_like(k_hat[5], -0.5))
        up_hat = dequantized_weight(qmodel.get_submodule("model.layers.0.mlp.up_proj"))
        assert torch.equal(up_hat[:, GROUP:2 * GROUP], torch.zeros_like(up_hat[:, GROUP:2 * GROUP]))
        # an outlier column only coarsens its own groups: the other groups keep the plain error
        q_hat = dequantized_weight(qmodel.get_submodule("model.layers.0.self_attn.q_proj"))
        w = ref["model.layers.0.self_attn.q_proj"].weight
        plain = slice(GROUP, None)
        rel = ((w[:, plain] - q_hat[:, plain]).norm() / w[:, plain].norm()).item()
        assert rel < REL_ERROR_BOUND[bits]


# ------------------------------------------------------------------ GPTQ against a float64 reference
def gptq_reference(w, h, bits, group_size, damp_percent, act_order):
    """GPTQ as optimal brain quantization with an explicit inverse Hessian (no Cholesky, no blocks):
    quantize column i, spread its error with row i of H⁻¹, then remove i from H⁻¹ by Gaussian
    elimination. float64 throughout; the grid per group is min-max of the current weights."""
    w, h = w.double().clone(), h.double().clone()
    n = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = sorted(range(n), key=lambda j: -float(h[j, j])) if act_order else list(range(n))
    h = h + damp_percent * torch.mean(torch.diag(h)) * torch.eye(n, dtype=torch.float64)
    hinv = torch.linalg.inv(h)
    w_hat = torch.zeros_like(w)
    levels = 2 ** bits - 1
    for k, j in enumerate(order):
        if k % group_size == 0:
            cols = order[k:k + group_size]
            lo, hi = w[:, cols].amin(1), w[:, cols].amax(1)
            scale = torch.where(hi > lo, (hi - lo) / levels, torch.ones_like(lo))
        q = torch.clamp(torch.round((w[:, j] - lo) / scale), 0, levels) * scale + lo
        w_hat[:, j] = q
        err = (w[:, j] - q) / hinv[j, j]
        rest = order[k:]
        w[:, rest] -= err[:, None] * hinv[j, rest][None, :]
        hinv = hinv - hinv[:, j:j + 1] @ hinv[j:j + 1, :] / hinv[j, j]
    return w_hat


def correlated_layer(seed: int, out_f=24, in_f=96, n=400, dead=(5, 77)):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(in_f, in_f, generator=g, dtype=torch.float64) / math.sqrt(in_f)
    x = torch.randn(n, in_f, generator=g, dtype=torch.float64) @ (torch.eye(in_f, dtype=torch.float64) + 2 * mix)
    x[:, 11] *= 20  # one outlier feature
    x[:, list(dead)] = 0  # inputs that are always zero
    w = torch.randn(out_f, in_f, generator=g, dtype=torch.float64)
    w[:, 30] *= 25  # one outlier weight column
    return w, 2 * x.T @ x / n, x


@pytest.mark.parametrize("act_order", [True, False])
@pytest.mark.parametrize("bits", [4, 3, 2])
def test_gptq_matches_float64_reference(bits, act_order):
    w, h, _ = correlated_layer(seed=bits)
    ref = gptq_reference(w, h, bits, 16, 0.01, act_order)
    for block in (16, 48, 1000):  # lazy batch updates do not change the result
        codes, scale, lo, gidx = gptq_quantize_weight(w, h, bits, 16, damp_percent=0.01, act_order=act_order,
                                                      block_size=block)
        w_hat = codes.double() * scale[:, gidx] + lo[:, gidx]
        same = torch.isclose(w_hat, ref, rtol=0, atol=1e-9)
        assert same.float().mean() > 0.995, (block, same.float().mean())  # rare rounding ties may flip
        assert torch.allclose(w_hat, ref, rtol=0, atol=1e-6) or same.float().mean() > 0.995
    # float32 (the pipeline's dtype) stays close to the float64 reference in output error
    codes, scale, lo, gidx = gptq_quantize_weight(w.float(), h.float(), bits, 16, act_order=act_order)
    w32 = (codes.float() * scale[:, gidx] + lo[:, gidx]).double()
    assert output_rel_error(w, w32, h) < 1.05 * output_rel_error(w, ref, h)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
def test_gptq_reconstruction_below_rtn_on_a_layer(bits):
    w, h, x = correlated_layer(seed=10 + bits)
    codes, scale, lo, gidx = gptq_quantize_weight(w, h, bits, 16)
    w_gptq = codes.double() * scale[:, gidx] + lo[:, gidx]
    c, s, m, gi = rtn_quantize_weight(w, bits, 16)
    w_rtn = c.double() * s[:, gi] + m[:, gi]
    loss = {k: ((x @ (w - v).T) ** 2).sum().item() for k, v in (("gptq", w_gptq), ("rtn", w_rtn))}
    assert loss["gptq"] < 0.9 * loss["rtn"], loss
    assert output_rel_error(w, w_gptq, h) == pytest.approx(math.sqrt(loss["gptq"] / ((x @ w.T) ** 2).sum().item()))


# ------------------------------------------------------------------ int8 activations against float64
def int8_reference(x: torch.Tensor, granularity: str) -> torch.Tensor:
    x = x.double()
    out = torch.empty_like(x)
    rows = x.reshape(-1, x.shape[-1])
    flat = out.view(-1, x.shape[-1])
    amax_all = rows.abs().max().item()
    for r in range(rows.shape[0]):
        amax = rows[r].abs().max().item() if granularity == "per_token" else amax_all
        s = amax / 127 if amax > 0 else 1.0
        flat[r] = torch.clamp(torch.round(rows[r] / s), -127, 127) * s
    return out


@pytest.mark.parametrize("granularity", ["per_token", "per_tensor"])
def test_int8_activations_match_float64(granularity):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 7, 48, generator=g)
    x[0, 0, 5] = 900.0           # a massive activation
    x[1, 2] = 0.0                # an all-zero token
    x[2, 3, :] = 1e-30           # a tiny token
    y = fake_quantize_int8(x, granularity)
    ref = int8_reference(x, granularity)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
    assert (y[1, 2] == 0).all()
    # the massive activation coarsens the whole tensor's grid, only its own token's per token
    others = (x - y)[1:].abs().max().item()
    assert (others > 1.0) if granularity == "per_tensor" else (others < 0.05), others
    layer = GroupQuantLinear(*rtn_quantize_weight(torch.randn(16, 48, generator=g), 4, 16),
                             bias=torch.randn(16, generator=g), bits=4, act_quant=granularity)
    out = layer(x).double()
    torch.testing.assert_close(out, ref @ layer.dequantize().double().T + layer.bias.double(), rtol=1e-5, atol=1e-3)
    with pytest.raises(ValueError, match="granularity"):
        fake_quantize_int8(x, "per_channel")


# ------------------------------------------------------------------ quantize_and_evaluate
def test_quantize_and_evaluate_records_settings(tmp_path, tiny_data_dir):
    from softpick.quantize import quantize_and_evaluate
    from test_evaluate import make_tiny  # noqa: PLC0415

    mdir = make_tiny(tmp_path / "model")  # vocabulary 512, as tiny_data_dir's (GPTQ calibrates on its train split)
    docs = tmp_path / "val_docs.jsonl"
    docs.write_text(json.dumps({"id": 0, "text": "A short held-out document about nothing in particular."}) + "\n")
    qcfg = {"methods": ["rtn", "gptq"], "bits": [4, 2], "group_size": 64, "quantize_lm_head": False,
            "gptq": {"calibration_sequences": 4, "calibration_length": 32}}
    ecfg = {"tasks": ["arc_easy", "lambada"], "limit": 2, "ppl_max_docs": 1, "batch_size": 8, "max_length": 64}
    out = tmp_path / "q.json"
    rec = quantize_and_evaluate(mdir, qcfg, ecfg, docs, out, "cpu", bits=3, method="gptq", data_dir=tiny_data_dir)
    assert json.loads(out.read_text()) == rec
    q = rec["quantization"]
    assert q["method"] == "gptq" and q["bits"] == 3 and q["group_size"] == 64 and q["n_layers"] == 14
    assert q["settings"]["damp_percent"] == 0.01 and q["settings"]["act_order"] is True
    assert q["settings"]["calibration_sequences"] == 4 and q["calibration"]["length"] == 32
    assert q["calibration"]["tokens"] == 128 and q["device"] == "cpu"
    assert rec["tasks"]["arc_easy"]["n"] == 2 and math.isfinite(rec["perplexity"]["bits_per_byte"])
    with pytest.raises(ValueError, match="pass method="):
        quantize_and_evaluate(mdir, qcfg, ecfg, docs, out, "cpu", bits=4)
    out.unlink()
    with pytest.raises(ValueError, match="bnb: bits must be one of"):
        quantize_and_evaluate(mdir, {**qcfg, "methods": ["bnb"]}, ecfg, docs, out, "cpu", bits=2)
    assert not out.exists()


def test_gptq_groups_layers_by_shared_input(trained):
    from softpick.quantize.gptq import sequential_groups

    model, _, calib, _ = trained
    groups = [[re.sub(r"^model\.layers\.\d+\.", "", n) for n, _ in g]
              for g in sequential_groups(model, linear_layers(model, True), calib, "cpu")]
    per_layer = [["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"], ["self_attn.o_proj"],
                 ["mlp.gate_proj", "mlp.up_proj"], ["mlp.down_proj"]]
    assert groups == per_layer * 2 + [["lm_head"]]


def test_config_rejects_unsupported_pairs_at_parse_time():
    from softpick.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"section 'quantize'.*\n.*\(bnb, 2\): bnb: bits must be one of \(8, 4\)"):
        load_config(overrides=["quantize.methods=[rtn, bnb]", "quantize.bits_by_method={}"])
    with pytest.raises(ConfigError, match="quantize.methods"):
        load_config(overrides=["quantize.methods=[awq]"])
    with pytest.raises(ConfigError, match="quantize.gptq"):
        load_config(overrides=["quantize.gptq.damping=0.1"])
    cfg = load_config(overrides=["quantize.methods=[gptq, bnb]", "quantize.bits=[3]"])
    assert quantize_jobs(cfg["quantize"]) == [("gptq", 3), ("bnb", 4)]  # the default's bnb: [4] applies


@pytest.mark.parametrize("quant_type", ["nf4", "fp4"])
def test_bnb_4bit_inference_on_any_cpu_with_inputs_not_a_multiple_of_the_block(quant_type):
    """The tiny model's down_proj has 352 inputs: bitsandbytes' AVX512-BF16 repacking (taken at the first
    inference forward on CPUs that have it) failed there with a reshape error, and would change the
    numbers by CPU. Every CPU must take the float32 dequantize + matmul path."""
    from softpick.quantize.bnb import _linear4bit, dequantized_weight

    torch.manual_seed(0)
    linear = nn.Linear(352, 128, bias=False)
    q = _linear4bit(linear, quant_type, 64, "cpu").eval()
    assert q.support_avx512bf16_for_cpu is False
    x = torch.randn(5, 352)
    with torch.no_grad():
        y = q(x)
    expected = x.double() @ dequantized_weight(q).double().T
    assert torch.allclose(y.double(), expected, rtol=1e-5, atol=1e-5)
