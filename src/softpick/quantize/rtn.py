"""Round-to-nearest (RTN): per-group asymmetric min-max quantization, the floor every method must meet.

Each row of W [out, in] is cut into groups of ``group_size`` consecutive input columns (the last
group of a row is shorter when ``in`` is not a multiple). A group with minimum ``lo`` and maximum
``hi`` gets ``scale = (hi - lo) / (2**bits - 1)`` (1 for a constant group) and codes
``q = clamp(round((w - lo) / scale), 0, 2**bits - 1)``; ``ŵ = q * scale + lo``, so the group's
minimum and maximum are exact. Codes, scales and offsets are what the layer keeps (its forward
dequantizes them); storage: ``bits`` per weight + float32 scale and offset per group.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

BITS = (8, 4, 3, 2)
GRANULARITIES = ("per_token", "per_tensor")  # of the int8 activation quantization (activation.py)
SETTINGS = {"scheme": "asymmetric min-max per group, float offset", "group_axis": "input (consecutive columns of a row)",
            "rounding": "nearest (ties to even)", "meta_dtype": "float32"}


def group_index(in_features: int, group_size: int, device=None) -> torch.Tensor:
    """Group id of every input column: column j belongs to group j // group_size."""
    return torch.arange(in_features, device=device) // group_size


def minmax_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, lo) per row of w [rows, n] for codes 0 .. 2**bits - 1."""
    lo, hi = w.amin(dim=1), w.amax(dim=1)
    scale = (hi - lo) / (2 ** bits - 1)
    return torch.where(scale > 0, scale, torch.ones_like(scale)), lo


def quantize_codes(w: torch.Tensor, scale: torch.Tensor, lo: torch.Tensor, bits: int) -> torch.Tensor:
    """Codes of w [rows, n] (or [rows]) for per-row scale / lo (broadcast over columns)."""
    if w.dim() == 2:
        scale, lo = scale[:, None], lo[:, None]
    return torch.clamp(torch.round((w - lo) / scale), 0, 2 ** bits - 1)


def rtn_quantize_weight(w: torch.Tensor, bits: int, group_size: int):
    """(codes uint8 [out, in], scale [out, G], lo [out, G], gidx [in]) of plain per-group RTN."""
    out_f, in_f = w.shape
    n_groups = -(-in_f // group_size)
    codes = torch.empty(out_f, in_f, dtype=torch.uint8, device=w.device)
    scale = torch.empty(out_f, n_groups, dtype=w.dtype, device=w.device)
    lo = torch.empty_like(scale)
    for g in range(n_groups):
        cols = slice(g * group_size, min((g + 1) * group_size, in_f))
        s, m = minmax_params(w[:, cols], bits)
        scale[:, g], lo[:, g] = s, m
        codes[:, cols] = quantize_codes(w[:, cols], s, m, bits).to(torch.uint8)
    return codes, scale, lo, group_index(in_f, group_size, w.device)


def fake_quantize_int8(x: torch.Tensor, granularity: str) -> torch.Tensor:
    """Symmetric dynamic int8 fake quantization of x (last dim = features): the inputs of activation.py's layers."""
    if granularity == "per_token":
        amax = x.detach().abs().amax(dim=-1, keepdim=True)
    elif granularity == "per_tensor":
        amax = x.detach().abs().amax()
    else:
        raise ValueError(f"activation granularity must be one of {GRANULARITIES}, got {granularity!r}")
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.clamp(torch.round(x / scale), -127, 127) * scale


class GroupQuantLinear(nn.Module):
    """A linear layer that keeps integer codes + per-group scale / offset and dequantizes in forward.

    ``gidx[j]`` is the group of input column j (GPTQ with act-order permutes the groups).
    ``act_quant`` = None | "per_token" | "per_tensor" fake-quantizes the input to int8 first.
    """

    def __init__(self, codes, scale, lo, gidx, bias=None, bits: int = 4, act_quant: str | None = None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.bits, self.act_quant = bits, act_quant
        self.register_buffer("codes", codes.to(torch.uint8).contiguous())
        self.register_buffer("scale", scale.float().contiguous())
        self.register_buffer("lo", lo.float().contiguous())
        self.register_buffer("gidx", gidx.long().contiguous())
        self.bias = None if bias is None else nn.Parameter(bias.detach().float().clone(), requires_grad=False)

    def dequantize(self) -> torch.Tensor:
        return self.codes.float() * self.scale[:, self.gidx] + self.lo[:, self.gidx]

    def storage_bits(self) -> int:
        """Packed codes + float32 scale / offset per group (+ int32 group index when permuted)."""
        n = self.codes.numel() * self.bits + (self.scale.numel() + self.lo.numel()) * 32
        if not torch.equal(self.gidx, torch.sort(self.gidx).values):
            n += self.gidx.numel() * 32
        return n

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act_quant is not None:
            x = fake_quantize_int8(x, self.act_quant)
        return F.linear(x, self.dequantize().to(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, bits={self.bits}, act_quant={self.act_quant}"


def quantize_linear(linear: nn.Linear, bits: int, group_size: int, act_quant: str | None = None) -> GroupQuantLinear:
    w = linear.weight.detach().float()
    codes, scale, lo, gidx = rtn_quantize_weight(w, bits, group_size)
    return GroupQuantLinear(codes, scale, lo, gidx, linear.bias, bits, act_quant)


def quantize_layers(model, layers, *, bits, group_size, settings, calibration=None, device="cpu"):
    for name, linear in layers:
        yield name, quantize_linear(linear, bits, group_size)
