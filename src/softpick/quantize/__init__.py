"""Post-training quantization of a trained model (registry of methods), then the same evaluation.

Every ``nn.Linear`` (attention q/k/v/o, MLP gate/up/down, and ``lm_head`` when
``quantize_lm_head``) is replaced by a quantized layer; embeddings and norms stay float32.
Methods (``METHODS``, one module each; every method declares its bit widths and settings):

  rtn            round-to-nearest, per-group asymmetric min-max (rtn.py): the floor, 8/4/3/2 bits
  hqq            HQQ (hqq library, hqq.py), 8/4/3/2 bits
  bnb            bitsandbytes NF4 at 4 bits, LLM.int8 at 8 bits (bnb.py)
  bnb_fp4        bitsandbytes FP4 at 4 bits
  gptq           GPTQ with calibration sequences from the training split (gptq.py), 8/4/3/2 bits
  rtn_a8_token   RTN weights + int8 activations per token (activation.py): W8A8 / W4A8
  rtn_a8_tensor  RTN weights + int8 activations per tensor

An unsupported (method, bits) pair is refused before any work (``check_method``; at config parse
time ``quantize_jobs``). Statistics per layer: ||W - Ŵ||_F / ||W||_F against the float64 weight and
the stored bits per parameter; every result JSON records the method's settings.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from . import activation, bnb, gptq, hqq, rtn


@dataclass(frozen=True)
class QuantMethod:
    name: str
    bits: tuple[int, ...]
    settings: dict
    quantize_layers: Callable  # (model, layers, *, bits, group_size, settings, calibration, device) -> iter
    description: str
    calibrated: bool = False
    group_sizes: tuple[int, ...] | None = None  # None: any power of two >= 8


METHODS: dict[str, QuantMethod] = {m.name: m for m in (
    QuantMethod("rtn", rtn.BITS, rtn.SETTINGS, rtn.quantize_layers, "round-to-nearest per group"),
    QuantMethod("hqq", hqq.BITS, hqq.SETTINGS, hqq.quantize_layers, "HQQ (hqq library)"),
    QuantMethod("bnb", (8, 4), bnb.settings_for("nf4"), bnb.layers_quantizer("nf4"),
                "bitsandbytes: NF4 at 4 bits, LLM.int8 at 8 bits", group_sizes=bnb.BLOCKSIZES),
    QuantMethod("bnb_fp4", (4,), bnb.settings_for("fp4"), bnb.layers_quantizer("fp4"),
                "bitsandbytes FP4", group_sizes=bnb.BLOCKSIZES),
    QuantMethod("gptq", gptq.BITS, gptq.DEFAULTS, gptq.quantize_layers, "GPTQ (implemented here)", calibrated=True),
    QuantMethod("rtn_a8_token", activation.BITS, activation.settings_for("per_token"),
                activation.layers_quantizer("per_token"), "RTN weights + int8 activations per token"),
    QuantMethod("rtn_a8_tensor", activation.BITS, activation.settings_for("per_tensor"),
                activation.layers_quantizer("per_tensor"), "RTN weights + int8 activations per tensor"),
)}


def check_method(method: str, bits, group_size) -> QuantMethod:
    """The registered method, or a ValueError naming the unknown method / unsupported bits / group size."""
    if method not in METHODS:
        raise ValueError(f"unknown quantization method {method!r}; available: {sorted(METHODS)}")
    spec = METHODS[method]
    if isinstance(bits, bool) or not isinstance(bits, int) or bits not in spec.bits:
        raise ValueError(f"{method}: bits must be one of {spec.bits}, got {bits!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 8 or group_size & (group_size - 1):
        raise ValueError(f"group_size must be a power of two >= 8, got {group_size!r}")
    if spec.group_sizes is not None and group_size not in spec.group_sizes:
        raise ValueError(f"{method}: group_size must be one of {spec.group_sizes}, got {group_size}")
    return spec


def quantize_jobs(quant_cfg: dict) -> list[tuple[str, int]]:
    """Every (method, bits) job of the config's quantize section: methods × bits, with
    bits_by_method overriding bits per method (its entries for methods not in `methods` are
    ignored, so a config merged over another may change `methods` alone). Unsupported pairs:
    one ValueError naming them all."""
    methods = list(quant_cfg["methods"])
    by_method = quant_cfg.get("bits_by_method") or {}  # entries of methods not run are ignored
    jobs, bad = [], []
    for m in methods:
        for b in by_method.get(m, quant_cfg["bits"]):
            try:
                check_method(m, b, quant_cfg["group_size"])
                jobs.append((m, b))
            except ValueError as err:
                bad.append(f"({m}, {b}): {err}")
    if bad:
        raise ValueError("unsupported quantize (method, bits) pairs (set quantize.bits_by_method.<method> to a "
                         "supported subset):\n    " + "\n    ".join(bad))
    return jobs


def linear_layers(model: nn.Module, quantize_lm_head: bool) -> list[tuple[str, nn.Linear]]:
    """The (qualified name, module) of every nn.Linear to quantize, in module order."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(name, mod) for name, mod in model.named_modules()
            if isinstance(mod, nn.Linear) and (quantize_lm_head or mod is not head)]


def _vocab_size(config: dict) -> int | None:
    tok = config.get("data", {}).get("tokenizer", {}) or {}
    return tok.get("vocab_size", 8192) if tok.get("kind", "bpe") == "bpe" else None


def check_group_size(config: dict) -> None:
    """Every weight HQQ quantizes is split into groups of quantize.group_size consecutive weights, so
    each quantized layer's weight count must be a multiple of it (the layers: linear_layers of the
    configured model, built on the meta device). The lm_head counts only when quantized and the
    vocabulary size is known before the data stage (a BPE tokenizer). A ValueError names the key and
    the layers (softpick.config.validate_config reports it as a ConfigError)."""
    quant = config.get("quantize", {})
    group = quant.get("group_size")
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        return
    from ..model import build_model

    lm_head = bool(quant.get("quantize_lm_head", False))
    vocab = _vocab_size(config) if lm_head else None
    bad: dict[str, tuple] = {}
    for variant in config["variants"]:
        with torch.device("meta"):
            model = build_model(config["model"], variant, vocab or 256, config["train"]["seq_len"])
        for name, layer in linear_layers(model, lm_head and vocab is not None):
            if layer.weight.numel() % group:
                bad.setdefault(name.split(".")[-1] if ".layers." in name else name, tuple(layer.weight.shape))
    if bad:
        shapes = ", ".join(f"{n} {list(s)}" for n, s in bad.items())
        raise ValueError(
            f"config key 'quantize.group_size' ({group}) does not divide the weight count of the quantized "
            f"layers {shapes}: HQQ splits each weight into groups of group_size consecutive values"
        )


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def dequantized_weight(module: nn.Module) -> torch.Tensor:
    if isinstance(module, rtn.GroupQuantLinear) or type(module).__name__ == "HQQLinear":
        return module.dequantize().detach()
    return bnb.dequantized_weight(module)


def storage_bits(module: nn.Module) -> int:
    if isinstance(module, rtn.GroupQuantLinear):
        return module.storage_bits()
    if type(module).__name__ == "HQQLinear":
        return hqq.storage_bits(module)
    return bnb.storage_bits(module)


def method_settings(method: str, quant_cfg: dict | None = None) -> dict:
    """The method's settings, with the config's overrides (quantize.gptq for GPTQ)."""
    spec = METHODS[method]
    settings = dict(spec.settings)
    if spec.calibrated:
        settings.update((quant_cfg or {}).get("gptq") or {})
    return settings


@torch.no_grad()
def quantize_model(model: nn.Module, *, method: str = "hqq", bits: int, group_size: int = 64,
                   quantize_lm_head: bool = False, inplace: bool = False, settings: dict | None = None,
                   calibration: torch.Tensor | None = None, device: str = "cpu"):
    """Replace the model's nn.Linear layers by `method`-quantized ones, computed on `device` (float32).

    Returns (model, stats); stats = {method, bits, group_size, quantize_lm_head, settings, n_layers,
    quantized_params, mean_rel_error, bits_per_param, bits_per_param_fp16_meta, per_layer: {name:
    {shape, rel_error, bits_per_param, ...}}}. The input model is deep-copied unless inplace."""
    spec = check_method(method, bits, group_size)
    settings = {**spec.settings, **(settings or {})}
    if not inplace:
        model = copy.deepcopy(model)
    model = model.float().to(device).eval()
    layers = linear_layers(model, quantize_lm_head)
    if not layers:
        raise ValueError("the model has no nn.Linear layers to quantize")
    ref = {name: lin.weight.detach().to("cpu", torch.float64).clone() for name, lin in layers}
    per_layer, total_bits, total_params = {}, 0, 0
    for name, new, *extra in spec.quantize_layers(model, layers, bits=bits, group_size=group_size, settings=settings,
                                                  calibration=calibration, device=device):
        w = ref[name]
        w_hat = dequantized_weight(new).to("cpu", torch.float64)
        sb = storage_bits(new)
        per_layer[name] = {"shape": list(w.shape),
                           "rel_error": float((w - w_hat).norm() / w.norm().clamp_min(1e-30)),
                           "bits_per_param": sb / w.numel(), **(extra[0] if extra else {})}
        total_bits += sb
        total_params += w.numel()
        _set_module(model, name, new)
    errs = [v["rel_error"] for v in per_layer.values()]
    stats = {"method": method, "bits": bits, "group_size": group_size, "quantize_lm_head": quantize_lm_head,
             "description": spec.description, "settings": settings, "n_layers": len(per_layer),
             "quantized_params": total_params, "mean_rel_error": sum(errs) / len(errs),
             "bits_per_param": total_bits / total_params, "bits_per_param_fp16_meta": bits + 32 / group_size,
             "per_layer": per_layer}
    return model, stats


def _pick_bits(quant_cfg: dict, bits):
    if bits is not None:
        return bits
    b = quant_cfg.get("bits")
    if isinstance(b, (list, tuple)):
        if len(b) != 1:
            raise ValueError(f"quant_cfg['bits'] = {b}: pass bits= to pick one")
        b = b[0]
    return b


def quantize_and_evaluate(model_dir: str | Path, quant_cfg: dict, eval_cfg: dict, val_docs, out_json,
                          device: str = "cpu", bits: int | None = None, method: str | None = None,
                          data_dir: str | Path | None = None) -> dict:
    """Quantize model_dir's model with `method` at `bits` on `device`, evaluate it there like
    softpick.evaluate.evaluate_dir and write out_json atomically (the evaluation JSON +
    "quantization": the stats of quantize_model + calibration record + seconds).

    method defaults to the single entry of quant_cfg["methods"] (or quant_cfg["method"]), bits to
    the single entry of quant_cfg["bits"]. GPTQ reads its calibration windows from data_dir's
    training split (default: val_docs' directory)."""
    from ..evaluate import check_eval_metrics, eval_kwargs, evaluate_model, write_json_atomic
    from ..loading import load_model_and_tokenizer

    bits = _pick_bits(quant_cfg, bits)
    if quant_cfg.get("tasks"):  # quantize.tasks: a subset of the tasks (the paper's quantization tables)
        eval_cfg = {**eval_cfg, "tasks": list(quant_cfg["tasks"])}
    if method is None:
        ms = quant_cfg.get("methods") or [quant_cfg.get("method", "hqq")]
        if len(ms) != 1:
            raise ValueError(f"quant_cfg['methods'] = {ms}: pass method= to pick one")
        method = ms[0]
    group_size = int(quant_cfg.get("group_size", 64))
    spec = check_method(method, bits, group_size)  # before any work
    settings = method_settings(method, quant_cfg)
    t0 = time.perf_counter()
    calibration, calib_record = None, None
    if spec.calibrated:
        data_dir = Path(data_dir) if data_dir is not None else Path(val_docs).parent
        calibration, calib_record = gptq.calibration_tokens(data_dir, int(settings["calibration_sequences"]),
                                                            int(settings["calibration_length"]),
                                                            int(settings["calibration_seed"]))
    model, tokenizer = load_model_and_tokenizer(model_dir, "cpu")  # files checked against the manifest first
    tq = time.perf_counter()
    qmodel, stats = quantize_model(model, method=method, bits=int(bits), group_size=group_size,
                                   quantize_lm_head=bool(quant_cfg.get("quantize_lm_head", False)), inplace=True,
                                   settings=settings, calibration=calibration, device=device)
    stats["seconds"] = round(time.perf_counter() - tq, 3)
    stats["device"] = str(device)
    if calib_record is not None:
        stats["calibration"] = calib_record
    res = evaluate_model(qmodel, tokenizer, val_docs=val_docs, device=device, **eval_kwargs(eval_cfg))
    record = {"model_dir": str(model_dir), **res, "seconds": round(time.perf_counter() - t0, 3),
              "quantization": stats}
    check_eval_metrics(record, out_json)  # the loaded model was checked for NaN / inf by load_model_and_tokenizer
    write_json_atomic(out_json, record)
    return record
