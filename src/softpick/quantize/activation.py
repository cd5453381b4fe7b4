"""Weight + activation quantization (W8A8, W4A8): RTN weights and dynamic int8 inputs of every quantized layer.

Weights: the per-group RTN of rtn.py at ``bits`` (so the difference to ``rtn`` at the same bits is the
activation quantization alone). Activations: symmetric int8, scale = max|x| / 127 computed at run
time per token (``rtn_a8_token``: the max over the hidden dimension of each position) or per
tensor (``rtn_a8_tensor``: one max over the whole input of the call, i.e. the batch), then
``x̂ = clamp(round(x / scale), -127, 127) * scale`` (fake quantization in float32: the int8 codes
are not kept). Outlier activations set the per-tensor scale, which is where massive activations
hurt. A small wrapper rather than torchao / optimum-quanto: no new dependency in the CI install,
the same arithmetic on CPU and CUDA, checked against a float64 reference in the tests (torchao's
int8 dynamic-activation configs were not evaluated here).
"""
from __future__ import annotations

from .rtn import GRANULARITIES, fake_quantize_int8, quantize_linear  # noqa: F401 (the int8 quantizer lives beside the layer)

BITS = (8, 4)


def settings_for(granularity: str) -> dict:
    return {"weights": "rtn (per-group asymmetric min-max)", "activations": "int8 symmetric, dynamic",
            "activation_granularity": granularity, "activation_clip": "none (scale = max|x| / 127)"}


def layers_quantizer(granularity: str):
    def quantize_layers(model, layers, *, bits, group_size, settings, calibration=None, device="cpu"):
        for name, linear in layers:
            yield name, quantize_linear(linear, bits, group_size, act_quant=granularity)

    return quantize_layers
