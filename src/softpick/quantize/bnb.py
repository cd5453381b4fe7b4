"""bitsandbytes (0.50.x): 4-bit NF4 / FP4 (``bnb.nn.Linear4bit``) and 8-bit LLM.int8 (``bnb.nn.Linear8bitLt``).

Both quantize when their parameters are moved to the device (CPU or CUDA). 4-bit: blockwise absmax
over blocks of ``group_size`` consecutive weights (row-major), codes from the NF4 or FP4 table,
absmax kept in float32 (no double quantization), compute dtype float32; on CPU the forward
dequantizes and multiplies in float32 (bitsandbytes' AVX512-BF16 repacking is switched off: it
needs in_features divisible by the block size and changes the numbers by CPU), on CUDA it runs
bitsandbytes' 4-bit kernels. 8-bit: the weight is cast to
float16 and quantized per output row (absmax / 127), and the forward is LLM.int8: input rows
quantized to int8 per token, columns with any |x| > threshold (6.0) computed in 16-bit beside the
int8 product (on CPU bitsandbytes' int8 matmul kernel in torch; on CUDA cuBLASLt int8).
``bnb`` = NF4 at 4 bits and LLM.int8 at 8; ``bnb_fp4`` = FP4 at 4 bits.
"""
from __future__ import annotations

import torch

BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)
INT8_THRESHOLD = 6.0


def settings_for(quant_type: str) -> dict:
    return {"library": "bitsandbytes", "4bit_quant_type": quant_type, "4bit_blocksize": "group_size",
            "4bit_double_quant": False, "compute_dtype": "float32",
            "8bit": "LLM.int8 (per-row int8 weights from float16, outlier threshold 6.0)",
            "int8_threshold": INT8_THRESHOLD}


def _linear4bit(linear, quant_type: str, blocksize: int, device):
    import bitsandbytes as bnb

    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=torch.float32, compress_statistics=False, quant_type=quant_type,
                          quant_storage=torch.uint8, device="cpu")
    q.weight = bnb.nn.Params4bit(linear.weight.detach().float().cpu().clone(), requires_grad=False,
                                 quant_type=quant_type, blocksize=blocksize, compress_statistics=False)
    if linear.bias is not None:
        q.bias = torch.nn.Parameter(linear.bias.detach().float().cpu().clone(), requires_grad=False)
    # bitsandbytes repacks 4-bit weights for its AVX512-BF16 CPU kernel at the first inference forward on
    # CPUs that have the instruction: that path needs in_features % blocksize == 0 (it fails on the tiny
    # model's down_proj, 352 inputs) and stores absmax in bfloat16, so results would depend on the CPU.
    # Off: every CPU dequantizes and multiplies in float32, the same numbers everywhere.
    q.support_avx512bf16_for_cpu = False
    return q.to(device)  # quantizes


def _linear8bit(linear, device):
    import bitsandbytes as bnb

    q = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                            has_fp16_weights=False, threshold=INT8_THRESHOLD, device="cpu")
    q.weight = bnb.nn.Int8Params(linear.weight.detach().float().cpu().clone(), requires_grad=False,
                                 has_fp16_weights=False)
    if linear.bias is not None:
        q.bias = torch.nn.Parameter(linear.bias.detach().float().cpu().clone(), requires_grad=False)
    return q.to(device)  # quantizes


def dequantized_weight(module) -> torch.Tensor:
    import bitsandbytes as bnb

    if isinstance(module, bnb.nn.Linear4bit):
        return bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
    cb = module.weight.data if module.weight.data.dtype == torch.int8 else module.state.CB
    scb = module.weight.SCB if module.weight.SCB is not None else module.state.SCB
    return cb.float() * (scb.float()[:, None] / 127)


def storage_bits(module) -> int:
    import bitsandbytes as bnb

    if isinstance(module, bnb.nn.Linear4bit):
        return module.weight.data.numel() * 8 + module.weight.quant_state.absmax.numel() * 32
    scb = module.weight.SCB if module.weight.SCB is not None else module.state.SCB
    return module.weight.data.numel() * 8 + scb.numel() * 32


def layers_quantizer(quant_type: str):
    def quantize_layers(model, layers, *, bits, group_size, settings, calibration=None, device="cpu"):
        for name, linear in layers:
            if bits == 4:
                yield name, _linear4bit(linear, quant_type, group_size, device)
            else:
                yield name, _linear8bit(linear, device)

    return quantize_layers
