"""HQQ (half-quadratic quantization, hqq 0.2.x), as before the registry.

``hqq.core.quantize.HQQLinear(linear, BaseQuantizeConfig(nbits, group_size), compute_dtype=float32)``
with the PYTORCH backend: its forward is ``x @ dequantize().T (+ bias)`` in float32 on CPU and CUDA
alike. HQQ's default config: axis=1 (groups of ``group_size`` consecutive weights in row-major
order), half-quadratic proximal optimisation of scale / zero, scale and zero kept unquantized in
float32. The CUDA-only backends (ATEN, torchao, bitblas, gemlite) are not used.
"""
from __future__ import annotations

import torch

BITS = (8, 4, 3, 2)
SETTINGS = {"library": "hqq", "axis": 1, "backend": "PYTORCH", "compute_dtype": "float32",
            "optimize": True, "quant_scale_zero": False, "meta_dtype": "float32"}


def quantize_layers(model, layers, *, bits, group_size, settings, calibration=None, device="cpu"):
    from hqq.core.quantize import BaseQuantizeConfig, HQQBackend, HQQLinear

    HQQLinear.set_backend(HQQBackend.PYTORCH)
    cfg = BaseQuantizeConfig(nbits=bits, group_size=group_size, axis=SETTINGS["axis"])
    for name, linear in layers:
        if linear.weight.numel() % group_size:
            raise ValueError(f"{name}: {tuple(linear.weight.shape)} weights are not divisible into groups of {group_size}")
        q = HQQLinear(linear, cfg, del_orig=True, compute_dtype=torch.float32, device=str(device))
        yield name, q


def storage_bits(module) -> int:
    return sum(t.numel() * t.element_size() * 8 for t in (module.W_q, module.meta["scale"], module.meta["zero"]))
