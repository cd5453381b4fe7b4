"""Weight-only post-training quantization (HQQ) of a trained model, then the same evaluation.

Every ``nn.Linear`` (attention q/k/v/o projections, MLP gate/up/down, and the output projection
``lm_head`` when ``quantize_lm_head``) is replaced by a quantized layer; embeddings and norms
stay float32. Methods are dispatched by name (``QUANTIZERS``): ``hqq`` is implemented;
``bnb`` (bitsandbytes) and ``gptq`` are reserved names that raise NotImplementedError, so a
later implementation only has to register a function ``(linear, name, bits, group_size) ->
(module, dequantized_weight, storage_bits)``.

HQQ on CPU (hqq 0.2.x): ``hqq.core.quantize.HQQLinear(linear, BaseQuantizeConfig(nbits,
group_size), compute_dtype=torch.float32, device="cpu")`` works with the PYTORCH backend (the
default; set explicitly here): its forward is ``x @ dequantize().T (+ bias)`` in float32, so a
quantized layer is exactly the float layer with the dequantized weight. HQQ's default config is
used (axis=1: groups of ``group_size`` consecutive weights along the input dimension, in row-major
order; half-quadratic proximal optimisation of scale/zero; scale and zero are kept unquantized in
compute_dtype = float32). The CUDA-only backends (ATEN, torchao, bitblas, gemlite) are not used.

Statistics: per layer ||W - Ŵ||_F / ||W||_F (float64) and storage bits per parameter (packed
codes + float32 scale/zero, as stored here), plus the usual accounting with 16-bit scale/zero
(``bits + 32 / group_size``).
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

SUPPORTED_BITS = {"hqq": (8, 4, 3, 2)}
RESERVED_METHODS = {"bnb": "bitsandbytes", "bitsandbytes": "bitsandbytes", "gptq": "GPTQ"}


# ------------------------------------------------------------------ methods

def _hqq_linear(linear: nn.Linear, name: str, bits: int, group_size: int):
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    if linear.weight.numel() % group_size:
        raise ValueError(f"{name}: {tuple(linear.weight.shape)} weights are not divisible into groups of {group_size}")
    cfg = BaseQuantizeConfig(nbits=bits, group_size=group_size)
    q = HQQLinear(linear, cfg, del_orig=True, compute_dtype=torch.float32, device="cpu")
    w_hat = q.dequantize().detach()
    storage = sum(t.numel() * t.element_size() * 8 for t in (q.W_q, q.meta["scale"], q.meta["zero"]))
    return q, w_hat, storage


QUANTIZERS: dict[str, Callable] = {"hqq": _hqq_linear}


def check_method(method: str, bits: int, group_size: int) -> None:
    if method in RESERVED_METHODS and method not in QUANTIZERS:
        raise NotImplementedError(f"quantization method {method!r} ({RESERVED_METHODS[method]}) is not implemented yet; "
                                  f"available: {sorted(QUANTIZERS)}")
    if method not in QUANTIZERS:
        raise ValueError(f"unknown quantization method {method!r}; available: {sorted(QUANTIZERS)}")
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in SUPPORTED_BITS[method]:
        raise ValueError(f"{method}: bits must be one of {SUPPORTED_BITS[method]}, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 8 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= 8, got {group_size!r}")


def linear_layers(model: nn.Module, quantize_lm_head: bool) -> list[tuple[str, nn.Linear]]:
    """The (qualified name, module) of every nn.Linear to quantize, in module order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            if mod is head and not quantize_lm_head:
                continue
            out.append((name, mod))
    return out


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@torch.no_grad()
def quantize_model(model: nn.Module, *, method: str = "hqq", bits: int, group_size: int = 64,
                   quantize_lm_head: bool = False, inplace: bool = False):
    """Replace the model's nn.Linear layers by `method`-quantized ones (CPU, float32 compute).

    Returns (model, stats); stats = {method, bits, group_size, quantize_lm_head, n_layers,
    mean_rel_error, bits_per_param, bits_per_param_fp16_meta, quantized_params, per_layer: {name:
    {shape, rel_error, bits_per_param}}}. The input model is deep-copied unless inplace."""
    check_method(method, bits, group_size)
    if not inplace:
        model = copy.deepcopy(model)
    model = model.to("cpu").float().eval()
    layers = linear_layers(model, quantize_lm_head)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to quantize")
    quantizer = QUANTIZERS[method]
    per_layer, total_bits, total_params = {}, 0, 0
    for name, lin in layers:
        w = lin.weight.detach().to(torch.float64).clone()
        new, w_hat, storage_bits = quantizer(lin, name, bits, group_size)
        err = (w - w_hat.to(torch.float64)).norm() / w.norm().clamp_min(1e-30)
        per_layer[name] = {"shape": list(w.shape), "rel_error": float(err),
                           "bits_per_param": storage_bits / w.numel()}
        total_bits += storage_bits
        total_params += w.numel()
        _set_module(model, name, new)
    errs = [v["rel_error"] for v in per_layer.values()]
    stats = {
        "method": method, "bits": bits, "group_size": group_size, "quantize_lm_head": quantize_lm_head,
        "n_layers": len(per_layer), "quantized_params": total_params,
        "mean_rel_error": sum(errs) / len(errs),
        "bits_per_param": total_bits / total_params,
        "bits_per_param_fp16_meta": bits + 32 / group_size,
        "per_layer": per_layer,
    }
    return model, stats


def quantize_and_evaluate(model_dir: str | Path, quant_cfg: dict, eval_cfg: dict, val_docs, out_json,
                          device: str = "cpu", bits: int | None = None) -> dict:
    """Quantize model_dir's model at `bits` (default: the single entry of quant_cfg["bits"]),
    evaluate it like softpick.evaluate.evaluate_dir and write out_json atomically.

    Output = the evaluation JSON + "quantization": {method, bits, group_size, quantize_lm_head,
    mean_rel_error, bits_per_param, bits_per_param_fp16_meta, per_layer, seconds}. Quantization
    runs on CPU (HQQ's pytorch backend); the quantized model is evaluated on CPU as well."""
    from .evaluate import check_eval_metrics, eval_kwargs, evaluate_model, load_model_dir, write_json_atomic

    if bits is None:
        b = quant_cfg.get("bits")
        if isinstance(b, (list, tuple)):
            if len(b) != 1:
                raise ValueError(f"quant_cfg['bits'] = {b}: pass bits= to pick one")
            b = b[0]
        bits = b
    t0 = time.perf_counter()
    model, tokenizer = load_model_dir(model_dir, "cpu")
    tq = time.perf_counter()
    qmodel, stats = quantize_model(model, method=quant_cfg.get("method", "hqq"), bits=int(bits),
                                   group_size=int(quant_cfg.get("group_size", 64)),
                                   quantize_lm_head=bool(quant_cfg.get("quantize_lm_head", False)), inplace=True)
    stats["seconds"] = round(time.perf_counter() - tq, 3)
    if device != "cpu":
        # HQQ's pytorch backend is what was validated here; keep the quantized model on CPU.
        device = "cpu"
    res = evaluate_model(qmodel, tokenizer, val_docs=val_docs, device=device, **eval_kwargs(eval_cfg))
    record = {"model_dir": str(model_dir), **res, "seconds": round(time.perf_counter() - t0, 3),
              "quantization": stats}
    check_eval_metrics(record, out_json)  # the loaded model was checked for NaN / inf in load_model_dir
    write_json_atomic(out_json, record)
    return record


def main(argv=None) -> int:
    import argparse
    import json
    import sys

    ap = argparse.ArgumentParser(description="HQQ-quantize one model dir and evaluate it")
    ap.add_argument("model_dir")
    ap.add_argument("--bits", type=int, required=True)
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--method", default="hqq")
    ap.add_argument("--quantize-lm-head", action="store_true")
    ap.add_argument("--val-docs", default=None)
    ap.add_argument("--out", required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--ppl-max-docs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=256)
    a = ap.parse_args(argv)
    qcfg = {"method": a.method, "bits": [a.bits], "group_size": a.group_size, "quantize_lm_head": a.quantize_lm_head}
    ecfg = {"limit": a.limit, "ppl_max_docs": a.ppl_max_docs, "batch_size": a.batch_size, "max_length": a.max_length}
    rec = quantize_and_evaluate(a.model_dir, qcfg, ecfg, a.val_docs, a.out)
    json.dump({k: v for k, v in rec.items() if k != "quantization"} | {"quantization": {
        k: v for k, v in rec["quantization"].items() if k != "per_layer"}}, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
