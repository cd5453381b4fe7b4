"""GPTQ (Frantar et al. 2022, arXiv 2210.17323), implemented here: no maintained library runs our model on CPU.

Per layer, from calibration inputs X (every token of the calibration sequences reaching it):
  H = 2/n · Σ x xᵀ; dead inputs (H_jj = 0) get H_jj = 1 and zero weights; with act-order the
  columns are processed by decreasing H_jj; damping λ = damp_percent · mean(diag H) is added to the
  diagonal; U = the upper Cholesky factor of H⁻¹. Columns are quantized one at a time with the
  per-group min-max quantizer of rtn.py (a group's scale / offset are set from the already updated
  weights when its first column is reached, so groups follow the processing order: with act-order
  ``gidx`` maps each original column to its group), and the error is spread over the not yet
  quantized columns: W[:, i:] -= (w_i - ŵ_i) / U_ii · U_i,i:. Lazy batch updates: inside a block of
  ``block_size`` columns (a multiple of the group size) the updates stay in the block; the block's
  accumulated errors update the remaining columns with one matrix product.
Layers are quantized in forward order, those reading the same input together (q/k/v, gate/up),
each from inputs that already pass through the quantized layers before it ("true sequential").
"""
from __future__ import annotations

import numpy as np
import torch

from .rtn import GroupQuantLinear, minmax_params, quantize_codes, rtn_quantize_weight

BITS = (8, 4, 3, 2)
DEFAULTS = {"calibration_sequences": 32, "calibration_length": 256, "calibration_seed": 0,
            "damp_percent": 0.01, "act_order": True, "block_size": 128, "batch_size": 8}


def gptq_quantize_weight(w: torch.Tensor, h: torch.Tensor, bits: int, group_size: int, *,
                         damp_percent: float = 0.01, act_order: bool = True, block_size: int = 128):
    """GPTQ of one weight w [out, in] with Hessian h [in, in], computed in w's dtype.

    Returns (codes uint8 [out, in], scale [out, G], lo [out, G], gidx [in]) in the original column
    order; ŵ[:, j] = codes[:, j] * scale[:, gidx[j]] + lo[:, gidx[j]]."""
    w, h = w.clone(), h.to(w.dtype).clone()
    out_f, in_f = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True, stable=True) if act_order else torch.arange(in_f, device=w.device)
    w, h = w[:, perm], h[perm][:, perm]
    h += damp_percent * torch.mean(torch.diag(h)) * torch.eye(in_f, dtype=h.dtype, device=h.device)
    u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)

    n_groups = -(-in_f // group_size)
    codes = torch.empty(out_f, in_f, dtype=torch.uint8, device=w.device)
    scale = torch.empty(out_f, n_groups, dtype=w.dtype, device=w.device)
    lo = torch.empty_like(scale)
    block = max(group_size, block_size - block_size % group_size)
    for i1 in range(0, in_f, block):
        i2 = min(i1 + block, in_f)
        w1, u1 = w[:, i1:i2].clone(), u[i1:i2, i1:i2]
        err1 = torch.zeros_like(w1)
        for i in range(i2 - i1):
            col = i1 + i
            if col % group_size == 0:
                s, m = minmax_params(w1[:, i:i + group_size], bits)
                scale[:, col // group_size], lo[:, col // group_size] = s, m
            q = quantize_codes(w1[:, i], s, m, bits)
            codes[:, col] = q.to(torch.uint8)
            err = (w1[:, i] - (q * s + m)) / u1[i, i]
            w1[:, i:] -= err[:, None] * u1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ u[i1:i2, i2:]
    inv = torch.argsort(perm)
    return codes[:, inv], scale, lo, inv // group_size


def output_rel_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """||X (W - Ŵ)ᵀ||_F / ||X Wᵀ||_F on the calibration inputs, from H ∝ XᵀX (float64)."""
    w, d, h = w.double(), (w - w_hat).double(), h.double()
    num = torch.einsum("oi,ij,oj->", d, h, d)
    den = torch.einsum("oi,ij,oj->", w, h, w)
    return float(torch.sqrt(num.clamp_min(0) / den.clamp_min(1e-300)))


class _Stop(Exception):
    """Raised by a hook once every layer of the current group has seen its input."""


def _run_hooks(model, modules: dict, calib: torch.Tensor, batch_size: int, device, on_input) -> None:
    """Forward the calibration batches, calling on_input(name, x) for each module in `modules`; stop early."""
    seen: set[str] = set()

    def make(name):
        def hook(mod, args):
            on_input(name, args[0].detach())
            seen.add(name)
            if len(seen) == len(modules):
                raise _Stop
        return hook

    handles = [m.register_forward_pre_hook(make(n)) for n, m in modules.items()]
    try:
        with torch.no_grad():
            for batch in calib.split(batch_size):
                seen.clear()
                try:
                    model(input_ids=batch.to(device))
                except _Stop:
                    pass
    finally:
        for hd in handles:
            hd.remove()


def sequential_groups(model, layers, calib, device) -> list[list[tuple[str, torch.nn.Module]]]:
    """The layers in forward order, consecutive layers that read the same input tensor grouped."""
    order: list[tuple[str, torch.Tensor]] = []  # the inputs stay alive, so equal storage = same tensor
    _run_hooks(model, dict(layers), calib[:1], 1, device, lambda n, x: order.append((n, x)))
    by_name = dict(layers)
    groups: list[list] = []
    for k, (name, x) in enumerate(order):
        prev = order[k - 1][1] if k else None
        if prev is not None and x.data_ptr() == prev.data_ptr() and x.shape == prev.shape:
            groups[-1].append((name, by_name[name]))
        else:
            groups.append([(name, by_name[name])])
    missing = set(by_name) - {n for n, _ in order}
    if missing:
        raise ValueError(f"GPTQ: layers never called in the forward pass: {sorted(missing)}")
    return groups


def hessians(model, group, calib, batch_size, device) -> dict[str, torch.Tensor]:
    """H = 2/n Σ x xᵀ (float32) of every layer in `group` over the calibration tokens."""
    acc = {n: torch.zeros(m.in_features, m.in_features, dtype=torch.float32, device=device) for n, m in group}
    count = dict.fromkeys(acc, 0)

    def add(name, x):
        x = x.reshape(-1, x.shape[-1]).float()
        acc[name] += x.T @ x
        count[name] += x.shape[0]

    _run_hooks(model, dict(group), calib, batch_size, device, add)
    return {n: 2 * acc[n] / max(count[n], 1) for n in acc}


def calibration_tokens(data_dir, n: int, length: int, seed: int) -> tuple[torch.Tensor, dict]:
    """n windows of `length` tokens from the training split at seeded random offsets, and their record."""
    from ..data import load_tokens

    tokens, _ = load_tokens(data_dir, "train")
    if len(tokens) <= length:
        raise ValueError(f"GPTQ calibration: the training split has {len(tokens)} tokens, fewer than "
                         f"quantize.gptq.calibration_length = {length}")
    starts = np.random.default_rng(seed).integers(0, len(tokens) - length, size=n)
    windows = np.stack([np.asarray(tokens[s:s + length], dtype=np.int64) for s in starts])
    return torch.from_numpy(windows), {"source": "training split (tokens_train.npy), seeded random windows",
                                       "sequences": n, "length": length, "seed": seed, "tokens": n * length}


def quantize_layers(model, layers, *, bits, group_size, settings, calibration=None, device="cpu"):
    if calibration is None:
        raise ValueError("GPTQ needs calibration token ids (quantize_model(..., calibration=...))")
    for group in sequential_groups(model, layers, calibration, device):
        hs = hessians(model, group, calibration, settings["batch_size"], device)
        for name, linear in group:
            w = linear.weight.detach().float()
            codes, scale, lo, gidx = gptq_quantize_weight(w, hs[name], bits, group_size,
                                                          damp_percent=settings["damp_percent"],
                                                          act_order=settings["act_order"],
                                                          block_size=settings["block_size"])
            q = GroupQuantLinear(codes, scale, lo, gidx, linear.bias, bits)
            rtn = GroupQuantLinear(*rtn_quantize_weight(w, bits, group_size), None, bits)
            extra = {"calib_output_rel_error": output_rel_error(w, q.dequantize(), hs[name]),
                     "rtn_calib_output_rel_error": output_rel_error(w, rtn.dequantize(), hs[name])}
            yield name, q, extra
