"""Softpick flash attention (Triton) against the float64 materialised reference.

On a machine without CUDA the kernels run under the Triton interpreter (TRITON_INTERPRET=1,
set here before triton is imported) in fp32 / fp16 at small awkward shapes; bf16 is skipped
there (the interpreter's bf16 tl.dot is wrong). On a CUDA device the same suite runs in
bf16 / fp16 / fp32 and adds large shapes. Errors are relative: ||x - ref|| / ||ref||.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

triton = pytest.importorskip("triton")

from softpick.attention import attention, resolve_backend  # noqa: E402
from softpick.attention.reference import naive_attention  # noqa: E402
from softpick.attention.triton import softpick_flash_attention  # noqa: E402

DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.bfloat16, torch.float16, torch.float32] if CUDA else [torch.float32, torch.float16]
# relative-error tolerances (fp32: IEEE dots on GPU, exact numpy in the interpreter)
TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2.5e-2}
# gradients in bf16: ds is rounded to bf16 before the dq / dk products and delta comes from the
# bf16-rounded o, so small-T rows (few keys, 1 - p small) sit at a few 1e-2
GRAD_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 5e-2}


def rel(a: torch.Tensor, b: torch.Tensor, rms_floor: float = 0.0) -> float:
    """||a - b|| / max(||b||, rms_floor * sqrt(numel))."""
    a, b = a.double(), b.double()
    floor = rms_floor * math.sqrt(max(b.numel(), 1))
    return ((a - b).norm() / b.norm().clamp_min(max(floor, 1e-300))).item()


def run_both(q, k, v, *, causal=True, scale=None, cu_seqlens=None, do=None):
    """(ours: o, dq, dk, dv) and (float64 reference: o, dq, dk, dv)."""
    q, k, v = (x.detach().clone().requires_grad_() for x in (q, k, v))
    o = softpick_flash_attention(q, k, v, scale=scale, causal=causal, cu_seqlens=cu_seqlens)
    if do is None:
        do = torch.randn_like(o)
    dq, dk, dv = torch.autograd.grad(o, (q, k, v), do)
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    if cu_seqlens is None:
        od, _ = naive_attention(qd, kd, vd, causal=causal, scale=scale)
    else:
        bounds = cu_seqlens.tolist()
        parts = [naive_attention(qd[:, a:b], kd[:, a:b], vd[:, a:b], causal=causal, scale=scale)[0]
                 for a, b in zip(bounds[:-1], bounds[1:])]
        od = torch.cat(parts, dim=1)
    rq, rk, rv = torch.autograd.grad(od, (qd, kd, vd), do.double())
    return (o, dq, dk, dv), (od, rq, rk, rv)


def check(ours, ref, dtype, what="", grad_floor=1e-3):
    # Gradients get an RMS floor (1e-3 of do's unit scale): a row whose only positive score is
    # one key (every row when T = 1) has ds = E * dp * (1 - p) with 1 - p ~ eps / den; flash
    # backward computes dp - delta with delta = rowsum(o * do) from the rounded o, so that
    # difference is cancellation noise (1e-7 of dp in fp32, 1e-3 in fp16) which a bare
    # relative error would magnify without bound.
    names = ("o", "dq", "dk", "dv")
    errs = {n: rel(a, b, 0.0 if n == "o" else grad_floor) for n, a, b in zip(names, ours, ref)}
    for n, a in zip(names, ours):
        assert torch.isfinite(a).all(), f"{what}: {n} has non-finite values"
    bad = {n: e for n, e in errs.items() if not e <= (TOL if n == "o" else GRAD_TOL)[dtype]}
    assert not bad, f"{what}: relative errors over {TOL[dtype]:g} (o) / {GRAD_TOL[dtype]:g} (grads): {bad} (all: {errs})"
    return errs


def randn(*shape, dtype, scale=1.0):
    return (torch.randn(*shape, device=DEVICE, dtype=torch.float32) * scale).to(dtype)


# ----------------------------------------------------------------------------- small awkward shapes

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [64, 100])
@pytest.mark.parametrize("T", [1, 17, 63, 111, 333])
def test_causal_gqa(T, D, dtype):
    """GQA 4:1, causal, any T; scores spread wide enough that both signs matter."""
    torch.manual_seed(1000 * T + D)
    B, H, Hkv = 2 if T < 200 else 1, 4, 1
    q, k, v = randn(B, T, H, D, dtype=dtype, scale=1.5), randn(B, T, Hkv, D, dtype=dtype, scale=1.5), randn(
        B, T, Hkv, D, dtype=dtype)
    # T = 1: the exact gradient is ~eps-sized (see check); measure the error against the
    # natural gradient scale (RMS 1, that of do) instead
    check(*run_both(q, k, v), dtype, f"T={T} D={D}", grad_floor=1.0 if T == 1 else 1e-3)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [16, 48, 128] + ([96, 256] if CUDA else []))
def test_head_dims_mha(D, dtype):
    torch.manual_seed(D)
    B, T, H = 1, 45, 2
    q, k, v = (randn(B, T, H, D, dtype=dtype) for _ in range(3))
    check(*run_both(q, k, v, scale=0.3), dtype, f"D={D}")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("D", [64, 100])
def test_varlen_three_docs(D, dtype):
    """Packed documents (B = 1): nothing leaks across boundaries; a 1-token document included."""
    torch.manual_seed(7 + D)
    T, H, Hkv = 150, 4, 2
    cu = torch.tensor([0, 61, 62, 150], device=DEVICE, dtype=torch.int32)
    q, k, v = randn(1, T, H, D, dtype=dtype, scale=1.5), randn(1, T, Hkv, D, dtype=dtype, scale=1.5), randn(
        1, T, Hkv, D, dtype=dtype)
    ours, ref = run_both(q, k, v, cu_seqlens=cu)
    check(ours, ref, dtype, "varlen")
    # leak check: changing document 3 leaves documents 1 and 2 untouched
    k2 = k.clone()
    k2[:, 62:] = randn(1, T - 62, Hkv, D, dtype=dtype)
    o2 = softpick_flash_attention(q, k2, v, cu_seqlens=cu)
    assert torch.equal(o2[:, :62], ours[0][:, :62].detach())


def _adversarial(B, T, H, Hkv, D, dtype):
    """Rows of all scores < -100, rows with scores > +80, large-magnitude mixed rows, normal rows."""
    u = torch.randn(D, device=DEVICE)
    u = u / u.norm()
    k = 0.3 * torch.randn(B, T, Hkv, D, device=DEVICE) + 3.0 * u
    q = torch.randn(B, T, H, D, device=DEVICE)
    kind = torch.arange(T, device=DEVICE) % 4
    sd = math.sqrt(D)
    q[:, kind == 1] = -(150.0 * sd / 3.0) * u + 0.1 * q[:, kind == 1]   # scores ~ -150: all very negative
    q[:, kind == 2] = (90.0 * sd / 3.0) * u + 0.1 * q[:, kind == 2]     # scores ~ +90
    q[:, kind == 3] = 25.0 * q[:, kind == 3]                              # scores of both signs, |s| ~ 25 sqrt
    v = torch.randn(B, T, Hkv, D, device=DEVICE)
    return q.to(dtype), k.to(dtype), v.to(dtype), kind


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("T", [63, 111])
def test_adversarial_scores(T, dtype):
    torch.manual_seed(T)
    q, k, v, kind = _adversarial(1, T, 4, 2, 64, dtype)
    ours, ref = run_both(q, k, v)
    check(ours, ref, dtype, "adversarial")
    # all-negative rows: output exactly 0
    assert (ours[0][:, kind == 1] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_fully_masked_rows(dtype):
    """T > S with causal alignment to the end: the first T - S queries see no key -> 0 out, finite grads."""
    torch.manual_seed(3)
    B, T, S, H, D = 2, 40, 25, 2, 64
    q = randn(B, T, H, D, dtype=dtype)
    k, v = randn(B, S, H, D, dtype=dtype), randn(B, S, H, D, dtype=dtype)
    ours, ref = run_both(q, k, v)
    check(ours, ref, dtype, "T>S")
    assert (ours[0][:, : T - S] == 0).all()
    assert (ours[1][:, : T - S] == 0).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_non_causal_and_decode_offset(dtype):
    torch.manual_seed(5)
    q = randn(1, 37, 4, 64, dtype=dtype)
    k, v = randn(1, 37, 2, 64, dtype=dtype), randn(1, 37, 2, 64, dtype=dtype)
    check(*run_both(q, k, v, causal=False), dtype, "non-causal")
    # decoding-style: few queries against a longer key cache (S > T), causal aligned at the end
    q2 = randn(2, 5, 4, 64, dtype=dtype)
    k2, v2 = randn(2, 70, 4, 64, dtype=dtype), randn(2, 70, 4, 64, dtype=dtype)
    check(*run_both(q2, k2, v2), dtype, "S>T")


def test_all_negative_everywhere_gives_zero():
    torch.manual_seed(11)
    dtype = torch.float32
    D = 64
    q, k, v, _ = _adversarial(1, 33, 2, 2, D, dtype)
    q = -(q.abs() + 5.0)
    k = k.abs() + 5.0  # every score very negative
    ours, ref = run_both(q, k, v)
    assert (ours[0] == 0).all()
    for t in ours[1:]:
        assert torch.isfinite(t).all()
    for a, b in zip(ours[1:], ref[1:]):
        assert (a.double() - b).abs().max() < 1e-6


# ----------------------------------------------------------------------------- integration

def test_dispatch_and_env_switch(monkeypatch):
    q = randn(1, 9, 2, 64, dtype=torch.float32)
    k, v = randn(1, 9, 2, 64, dtype=torch.float32), randn(1, 9, 2, 64, dtype=torch.float32)
    monkeypatch.setenv("SOFTPICK_ATTN_BACKEND", "torch")
    assert resolve_backend("auto", "softpick", q.device, False, False) == "torch"
    monkeypatch.setenv("SOFTPICK_ATTN_BACKEND", "triton")
    assert resolve_backend("auto", "softpick", q.device, False, False) == "triton"
    out, _ = attention(q, k, v, kind="softpick")
    ref, _ = naive_attention(q.double(), k.double(), v.double())
    assert rel(out, ref) < 1e-4
    monkeypatch.delenv("SOFTPICK_ATTN_BACKEND")
    expected = "triton" if CUDA else "torch"
    assert resolve_backend("auto", "softpick", torch.device(DEVICE), False, False) == expected


# unit roundoff: one rounding moves a value by at most this much, relative
UNIT_ROUNDOFF = {torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}


def model_step_under_autocast(backend: str, autocast: bool, dtype, seed: int = 0):
    """(loss, gradients by name) of one forward / backward of a tiny 2-layer model on fixed tokens."""
    from softpick.model import SoftpickConfig, SoftpickForCausalLM

    cfg = SoftpickConfig(vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, initializer_range=0.05)
    ids = torch.randint(0, 64, (2, 40), device=DEVICE, generator=torch.Generator(DEVICE).manual_seed(seed))
    torch.manual_seed(0)
    model = SoftpickForCausalLM(cfg).to(DEVICE)
    model.config.attention_backend = backend
    with torch.autocast(torch.device(DEVICE).type, dtype=dtype, enabled=autocast):
        loss = model(ids[:, :-1], targets=ids[:, 1:]).loss
    loss.backward()
    lost = [n for n, p in model.named_parameters() if p.grad is None]
    assert not lost, f"{backend}: no gradient reached {lost}"
    return loss.detach().double(), {n: p.grad.double() for n, p in model.named_parameters()}


def spy_on_kernel(monkeypatch) -> list[dict]:
    """Record every softpick_flash_attention call: its inputs, output and (after backward) the
    gradients it received (do) and returned (dq, dk, dv)."""
    import softpick.attention.triton as triton_pkg

    real, calls = triton_pkg.softpick_flash_attention, []

    def spy(q, k, v, **kwargs):
        out = real(q, k, v, **kwargs)
        call = {"inputs": tuple(x.detach() for x in (q, k, v)), "kwargs": kwargs, "o": out.detach()}
        calls.append(call)
        for name, t in (("do", out), ("dq", q), ("dk", k), ("dv", v)):
            if t.requires_grad:
                t.register_hook(lambda g, name=name: call.__setitem__(name, g))
        return out

    monkeypatch.setattr(triton_pkg, "softpick_flash_attention", spy)  # _triton_softpick looks it up per call
    return calls


def check_kernel_calls(calls: list[dict], dtype) -> None:
    """Each recorded call against the float64 reference evaluated on the very inputs the kernel got."""
    assert calls
    for i, call in enumerate(calls):
        assert all(x.dtype == dtype for x in call["inputs"]), [x.dtype for x in call["inputs"]]
        assert {"do", "dq", "dk", "dv"} <= call.keys(), f"model call {i}: no gradient for {call.keys()}"
        qd, kd, vd = (x.double().requires_grad_() for x in call["inputs"])
        od, _ = naive_attention(qd, kd, vd, causal=call["kwargs"]["causal"], scale=call["kwargs"]["scale"])
        ref = (od, *torch.autograd.grad(od, (qd, kd, vd), call["do"].double()))
        # check's gradient floor is 1e-3 of do's scale; in the model do is far from unit RMS
        rms_do = call["do"].double().square().mean().sqrt().item()
        check((call["o"], call["dq"], call["dk"], call["dv"]), ref, dtype, f"model call {i}", grad_floor=1e-3 * rms_do)


# Model step under autocast vs the fp32 no-autocast step, each backend on its own, not against the
# other backend: the host CPU's fp16 matmuls round differently from CPU to CPU. u: unit roundoff.
# loss: smooth in every rounding (each <= u relative, mostly cancelling): 4 u, fp16 ~ 2e-3
# (measured <= 0.16 u over 40 token draws).
# gradients: softpick's relu(e^s - 1) and |e^s - 1| change slope at s = 0. The ~10 roundings upstream
# of the scores move each by ~10 u of their spread, so a fraction f ~ 10 u (fp16: 5e-3) of the scores
# sit close enough to 0 to switch branch, and the gradient moves by ~sqrt(f) (fp16: 7%), by which side
# of a kink a score lands on, not by how well anything is computed (fp16, these inputs: 0.4% or 1.3%
# for either backend as parameters are perturbed by 1e-6 relative; 40 token draws: up to 16%).
# Bound 0.25 sqrt(u / u_fp16): fails a gradient lost at the cast, of the wrong sign or scaled by > 25%
# (fp16); the kernel's own numbers are held to GRAD_TOL on the very inputs it got (check_kernel_calls:
# <= 4e-4 here in fp16).
def autocast_tolerances(dtype) -> tuple[float, float]:
    u = UNIT_ROUNDOFF[dtype]
    return 4 * u, 0.25 * math.sqrt(u / UNIT_ROUNDOFF[torch.float16])


def test_autocast_mixed_dtypes_and_model_step(monkeypatch):
    """Under autocast the model hands the kernel fp32 q, k (RoPE) and a low-precision v: the dispatch
    casts them to the autocast dtype (fp16 here: the interpreter's bf16 dot is wrong). In a model step
    through the triton backend each kernel call matches the float64 reference on its own inputs, and
    loss and gradients stay within fp16 rounding of the fp32 step (as the torch backend's do)."""
    dtype = torch.bfloat16 if CUDA else torch.float16
    q, k = randn(2, 33, 4, 64, dtype=torch.float32), randn(2, 33, 2, 64, dtype=torch.float32)
    v = randn(2, 33, 2, 64, dtype=dtype)
    with torch.autocast(torch.device(DEVICE).type, dtype=dtype):
        out, _ = attention(q, k, v, kind="softpick", backend="triton")
    assert out.dtype == dtype
    ref, _ = naive_attention(q.to(dtype).double(), k.to(dtype).double(), v.double())
    assert rel(out, ref) < TOL[dtype]

    loss_tol, grad_tol = autocast_tolerances(dtype)
    ref_loss, ref_grads = model_step_under_autocast("torch", False, dtype)
    calls = spy_on_kernel(monkeypatch)
    for backend in ("torch", "triton"):
        loss, grads = model_step_under_autocast(backend, True, dtype)
        assert abs(loss - ref_loss) <= loss_tol * abs(ref_loss), (backend, loss, ref_loss)
        errs = {n: rel(g, ref_grads[n], 1e-3) for n, g in grads.items()}
        bad = {n: e for n, e in errs.items() if not e <= grad_tol}
        assert not bad, (backend, bad)
    assert len(calls) == 2  # one per layer, from the triton step only
    check_kernel_calls(calls, dtype)


def test_torch_compile_fullgraph():
    """The custom op traces without a graph break, forward and backward."""
    torch._dynamo.reset()
    dtype = torch.bfloat16 if CUDA else torch.float32

    def f(q, k, v):
        return (softpick_flash_attention(q, k, v) * 2).float().square().sum()

    compiled = torch.compile(f, fullgraph=True, backend="inductor" if CUDA else "aot_eager")
    q = randn(1, 21, 4, 64, dtype=dtype).requires_grad_()
    k, v = randn(1, 21, 2, 64, dtype=dtype).requires_grad_(), randn(1, 21, 2, 64, dtype=dtype).requires_grad_()
    loss = compiled(q, k, v)
    g = torch.autograd.grad(loss, (q, k, v))
    loss_e = f(q, k, v)
    g_e = torch.autograd.grad(loss_e, (q, k, v))
    assert rel(loss, loss_e) < 1e-5
    for a, b in zip(g, g_e):
        assert rel(a, b) < 1e-5


def test_opcheck():
    from softpick.attention.triton.ops import _flash_attn_fwd

    q = randn(1, 10, 2, 32, dtype=torch.float32).requires_grad_()
    k, v = randn(1, 10, 1, 32, dtype=torch.float32).requires_grad_(), randn(1, 10, 1, 32, dtype=torch.float32).requires_grad_()
    cu = torch.tensor([0, 4, 10], device=DEVICE, dtype=torch.int32)
    torch.library.opcheck(_flash_attn_fwd, (q, k, v, None, 0.2, True))
    torch.library.opcheck(_flash_attn_fwd, (q, k, v, cu, 0.2, True))


# ----------------------------------------------------------------------------- large shapes (GPU only)

@pytest.mark.skipif(not CUDA, reason="large shapes run on a CUDA device only")
@pytest.mark.parametrize(
    "B,T,H,Hkv,D",
    [(2, 2048, 8, 8, 64), (1, 4096, 4, 4, 128), (1, 1999, 8, 2, 100), (1, 3000, 4, 1, 96), (1, 1024, 4, 4, 256)],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_large_shapes_gpu(B, T, H, Hkv, D, dtype):
    torch.manual_seed(T + D)
    q, k, v = randn(B, T, H, D, dtype=dtype, scale=1.5), randn(B, T, Hkv, D, dtype=dtype, scale=1.5), randn(
        B, T, Hkv, D, dtype=dtype)
    check(*run_both(q, k, v), dtype, f"large {B, T, H, Hkv, D}")


@pytest.mark.skipif(not CUDA, reason="large shapes run on a CUDA device only")
def test_large_varlen_gpu():
    torch.manual_seed(0)
    dtype = torch.bfloat16
    cu = torch.tensor([0, 1000, 1001, 3333, 4096], device=DEVICE, dtype=torch.int32)
    q, k, v = randn(1, 4096, 8, 64, dtype=dtype, scale=1.5), randn(1, 4096, 2, 64, dtype=dtype, scale=1.5), randn(
        1, 4096, 2, 64, dtype=dtype)
    check(*run_both(q, k, v, cu_seqlens=cu), dtype, "large varlen")
