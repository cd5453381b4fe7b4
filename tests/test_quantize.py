"""softpick.quantize: HQQ weight-only quantization on CPU, and quantize_and_evaluate."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

pytest.importorskip("hqq")

from softpick.model import SoftpickConfig, SoftpickForCausalLM  # noqa: E402
from softpick.quantize import QUANTIZERS, linear_layers, quantize_model  # noqa: E402


def tiny_model(seed: int = 0) -> SoftpickForCausalLM:
    torch.manual_seed(seed)
    cfg = SoftpickConfig(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=176, attention_kind="softpick", max_position_embeddings=128,
                         initializer_range=0.02)
    return SoftpickForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def quantized(model):
    return {b: quantize_model(model, method="hqq", bits=b, group_size=64, quantize_lm_head=True) for b in (8, 4, 3, 2)}


def test_layers_selected(model):
    names = [n for n, _ in linear_layers(model, quantize_lm_head=False)]
    per_layer = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    assert len(names) == 2 * len(per_layer) and not any("lm_head" in n for n in names)
    assert "lm_head" in [n for n, _ in linear_layers(model, quantize_lm_head=True)]
    qmodel, stats = quantize_model(model, bits=4, group_size=64, quantize_lm_head=False)
    assert stats["n_layers"] == 14 and "lm_head" not in stats["per_layer"]
    assert isinstance(qmodel.lm_head, nn.Linear) and isinstance(qmodel.get_input_embeddings(), nn.Embedding)
    assert not any(isinstance(m, nn.Linear) for n, m in qmodel.named_modules() if n != "lm_head")
    # the input model is untouched (deep copy)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 15
    assert torch.equal(qmodel.get_input_embeddings().weight, model.get_input_embeddings().weight)


def test_error_decreases_with_bits(quantized):
    errs = {b: quantized[b][1]["mean_rel_error"] for b in quantized}
    assert errs[8] < errs[4] < errs[3] < errs[2] < 1.0, errs
    assert errs[8] < 0.01
    for name in quantized[8][1]["per_layer"]:
        e = [quantized[b][1]["per_layer"][name]["rel_error"] for b in (8, 4, 3, 2)]
        assert e == sorted(e), (name, e)
    for b, (_, st) in quantized.items():
        assert st["bits"] == b and st["group_size"] == 64 and st["method"] == "hqq"
        assert b < st["bits_per_param"] <= b + 1.5  # packed codes + float32 scale/zero per 64 weights
        assert st["bits_per_param_fp16_meta"] == b + 0.5


def test_8bit_logits_close_to_float(model, quantized):
    x = torch.randint(4, 320, (2, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).logits
        q8 = quantized[8][0](x).logits
        q2 = quantized[2][0](x).logits
    d8 = ((q8 - ref).norm() / ref.norm()).item()
    d2 = ((q2 - ref).norm() / ref.norm()).item()
    assert d8 < 0.02, d8
    assert d8 < d2


def test_quantized_layer_forward_reference(quantized):
    """A quantized layer computes x @ dequant(W)^T (checked in float64)."""
    qmodel, _ = quantized[3]
    layer = qmodel.get_submodule("model.layers.0.mlp.down_proj")
    w_hat = layer.dequantize().double()
    assert w_hat.shape == (64, 176)
    x = torch.randn(5, 7, 176, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = layer(x).double()
    ref = x.double() @ w_hat.T
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


def test_rel_error_matches_dequantized_weight(model, quantized):
    qmodel, stats = quantized[4]
    w = model.get_submodule("model.layers.1.self_attn.q_proj").weight.double()
    w_hat = qmodel.get_submodule("model.layers.1.self_attn.q_proj").dequantize().double()
    err = ((w - w_hat).norm() / w.norm()).item()
    assert err == pytest.approx(stats["per_layer"]["model.layers.1.self_attn.q_proj"]["rel_error"], rel=1e-9)


def test_bad_arguments(model):
    with pytest.raises(ValueError, match="unknown quantization method"):
        quantize_model(model, method="awq", bits=4, group_size=64, quantize_lm_head=False)
    for m in ("gptq", "bnb"):
        with pytest.raises(NotImplementedError, match="not implemented"):
            quantize_model(model, method=m, bits=4, group_size=64, quantize_lm_head=False)
    for b in (1, 5, 16, 4.0, True):
        with pytest.raises(ValueError, match="bits must be one of"):
            quantize_model(model, method="hqq", bits=b, group_size=64, quantize_lm_head=False)
    with pytest.raises(ValueError, match="group_size"):
        quantize_model(model, method="hqq", bits=4, group_size=48, quantize_lm_head=False)
    assert "hqq" in QUANTIZERS


def test_quantize_and_evaluate(tmp_path):
    from softpick.quantize import quantize_and_evaluate
    from test_evaluate import make_tiny  # noqa: PLC0415

    mdir = make_tiny(tmp_path / "model")
    docs = tmp_path / "val_docs.jsonl"
    docs.write_text(json.dumps({"id": 0, "text": "A short held-out document about nothing in particular."}) + "\n")
    out = tmp_path / "q.json"
    qcfg = {"method": "hqq", "bits": [8, 4, 3, 2], "group_size": 64, "quantize_lm_head": False}
    ecfg = {"tasks": ["arc_easy", "lambada"], "limit": 2, "ppl_max_docs": 1, "batch_size": 8, "max_length": 64}
    rec = quantize_and_evaluate(mdir, qcfg, ecfg, docs, out, "cpu", bits=3)
    assert json.loads(out.read_text()) == rec
    q = rec["quantization"]
    assert q["bits"] == 3 and q["method"] == "hqq" and q["group_size"] == 64 and q["n_layers"] == 14
    assert 0 < q["mean_rel_error"] < 1 and set(q["per_layer"]) == {
        f"model.layers.{i}.{p}" for i in range(2) for p in
        ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")}
    assert rec["tasks"]["arc_easy"]["n"] == 2 and math.isfinite(rec["perplexity"]["bits_per_byte"])
    with pytest.raises(ValueError, match="pass bits="):
        quantize_and_evaluate(mdir, qcfg, ecfg, docs, out, "cpu")
