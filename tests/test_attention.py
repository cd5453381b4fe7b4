"""The softpick / softmax reference against a direct float64 evaluation of the formulas."""
import math

import pytest
import torch

from softpick.attention import attention
from softpick.attention.reference import EPS, naive_attention, softpick_weights


def direct_softpick(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ReLU(e^x - 1) / (sum_j |e^x_j - 1| + eps) over unmasked entries, row by row with Python floats.
    Exponents past float range use the m-shifted form, which is the same number."""
    rows, keeps = scores.double().reshape(-1, scores.shape[-1]).tolist(), mask.reshape(-1, mask.shape[-1]).tolist()
    out = []
    for row, keep in zip(rows, keeps):
        vals = [x for x, k in zip(row, keep) if k]
        m = max([0.0] + vals)
        den = sum(abs(math.exp(x - m) - math.exp(-m)) for x in vals) + EPS * math.exp(-m)
        out.append([max(math.exp(x - m) - math.exp(-m), 0.0) / den if k else 0.0 for x, k in zip(row, keep)])
    return torch.tensor(out, dtype=torch.float64).reshape(scores.shape)


def rand_qkv(B, T, H, Hkv, D, dtype=torch.float64, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, T, H, D, generator=g, dtype=dtype) * scale).requires_grad_()
    k = (torch.randn(B, T, Hkv, D, generator=g, dtype=dtype) * scale).requires_grad_()
    v = torch.randn(B, T, Hkv, D, generator=g, dtype=dtype).requires_grad_()
    return q, k, v


@pytest.mark.parametrize("scale", [0.3, 1.0, 4.0])
def test_softpick_matches_direct_formula(scale):
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(3, 2, 9, 9, generator=g, dtype=torch.float64) * scale * 3
    mask = torch.ones(9, 9, dtype=torch.bool).tril()[None, None].expand(3, 2, 9, 9)
    got = softpick_weights(scores, mask)
    torch.testing.assert_close(got, direct_softpick(scores, mask), rtol=1e-12, atol=1e-14)


def test_adversarial_scores():
    # rows far below -100, far above +80, all-negative rows, mixed huge values
    scores = torch.tensor([
        [-150.0, -200.0, -120.0, -101.0],
        [85.0, 90.0, -300.0, 81.0],
        [-0.5, -1.0, -2.0, -0.1],
        [700.0, -700.0, 0.0, 1e-9],
    ], dtype=torch.float64)
    mask = torch.ones_like(scores, dtype=torch.bool)
    got = softpick_weights(scores, mask)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, direct_softpick(scores, mask), rtol=1e-12, atol=1e-14)
    assert got[0].abs().sum() == 0 and got[2].abs().sum() == 0  # all scores <= 0 -> row of zeros
    assert (got.sum(-1) <= 1 + 1e-12).all()


def test_masked_entries_add_nothing_to_denominator():
    scores = torch.tensor([[1.0, 2.0, -3.0, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    got = softpick_weights(scores, mask)
    trimmed = softpick_weights(scores[:, :3], mask[:, :3])
    torch.testing.assert_close(got[:, :3], trimmed)
    assert got[0, 3] == 0


def test_row_sums_at_most_one_and_zero_when_nonpositive():
    q, k, v = rand_qkv(2, 33, 4, 4, 16, scale=2.0)
    _, w = naive_attention(q, k, v)
    sums = w.sum(-1)
    assert (sums <= 1 + 1e-12).all()
    scores = torch.einsum("bthd,bshd->bhts", q, k) / 4.0
    causal = torch.ones(33, 33, dtype=torch.bool).tril()
    nonpos = (scores.masked_fill(~causal, -1.0) <= 0).all(-1)
    assert nonpos.any()
    assert (sums[nonpos] == 0).all()


@pytest.mark.parametrize("kind", ["softpick", "softmax"])
def test_gradcheck_float64(kind):
    q, k, v = rand_qkv(1, 6, 4, 2, 8, scale=1.5)  # GQA 2:1
    pad = torch.tensor([[1, 1, 1, 1, 1, 0]])
    fn = lambda a, b, c: naive_attention(a, b, c, kind=kind, attention_mask=pad)[0]
    assert torch.autograd.gradcheck(fn, (q, k, v), eps=1e-6, atol=1e-6)


def test_gradient_matches_paper_formula():
    """ds_k = (e^{s_k - m} / den) * ([s_k > 0] dp_k - sign(s_k) * delta), delta = rowsum(O * dO)."""
    g = torch.Generator().manual_seed(3)
    s = (torch.randn(5, 7, generator=g, dtype=torch.float64) * 2).requires_grad_()
    v = torch.randn(7, 3, generator=g, dtype=torch.float64)
    do = torch.randn(5, 3, generator=g, dtype=torch.float64)
    mask = torch.ones(5, 7, dtype=torch.bool)
    p = softpick_weights(s, mask)
    o = p @ v
    (o * do).sum().backward()
    with torch.no_grad():
        m = s.amax(-1, keepdim=True).clamp_min(0)
        den = (torch.exp(s - m) - torch.exp(-m)).abs().sum(-1, keepdim=True) + EPS * torch.exp(-m)
        dp = do @ v.T
        delta = (o * do).sum(-1, keepdim=True)
        ds = torch.exp(s - m) / den * ((s > 0).double() * dp - torch.sign(s) * delta)
    torch.testing.assert_close(s.grad, ds, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["softpick", "softmax"])
def test_fully_masked_rows_and_very_negative_rows_are_finite(kind):
    q, k, v = rand_qkv(2, 5, 2, 2, 4)
    with torch.no_grad():
        q[0] *= 0
        q[0] -= 60.0  # huge negative scores against positive keys
        k.abs_()
    pad = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 1, 0, 0]])  # sample 0 fully padded
    o, w = naive_attention(q, k, v, kind=kind, attention_mask=pad)
    assert torch.isfinite(o).all() and torch.isfinite(w).all()
    assert o[0].abs().sum() == 0
    o.sum().backward()
    for t in (q, k, v):
        assert torch.isfinite(t.grad).all()


def test_padding_matches_trimmed_sequence():
    q, k, v = rand_qkv(1, 8, 2, 2, 4)
    pad = torch.tensor([[1] * 6 + [0] * 2])
    o_pad, _ = naive_attention(q, k, v, attention_mask=pad)
    o_trim, _ = naive_attention(q[:, :6], k[:, :6], v[:, :6])
    torch.testing.assert_close(o_pad[:, :6], o_trim)


def test_gqa_equals_repeated_heads():
    q, k, v = rand_qkv(2, 9, 8, 2, 4)
    o_gqa, _ = naive_attention(q, k, v)
    o_mha, _ = naive_attention(q, k.repeat_interleave(4, 2), v.repeat_interleave(4, 2))
    torch.testing.assert_close(o_gqa, o_mha)


def test_dispatch_softmax_sdpa_matches_reference():
    q, k, v = rand_qkv(2, 10, 4, 2, 8, dtype=torch.float32)
    pad = torch.tensor([[1] * 10, [1] * 7 + [0] * 3])
    fast, _ = attention(q, k, v, kind="softmax", attention_mask=pad, backend="torch")
    ref, _ = naive_attention(q, k, v, kind="softmax", attention_mask=pad)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)


def test_dispatch_errors_are_clear():
    q, k, v = rand_qkv(1, 4, 3, 2, 4)
    with pytest.raises(ValueError, match="multiple of key/value heads"):
        naive_attention(q, k, v)
    q, k, v = rand_qkv(1, 4, 2, 2, 4)
    with pytest.raises(ValueError, match="unknown attention kind"):
        attention(q, k, v, kind="sparsemax")
    with pytest.raises(ValueError, match="does not return attention weights"):
        attention(q, k, v, backend="triton", return_weights=True)


def test_fused_torch_softpick_matches_reference_values_and_gradients():
    q, k, v = rand_qkv(2, 13, 4, 2, 8, scale=3.0)  # large scale: many negative and > 0 scores
    pad = torch.tensor([[1] * 13, [1] * 9 + [0] * 4])
    ref, _ = naive_attention(q, k, v, attention_mask=pad)
    fast, _ = attention(q, k, v, attention_mask=pad, backend="torch")
    torch.testing.assert_close(fast, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    grads_ref = torch.autograd.grad(ref, (q, k, v), g)
    grads_fast = torch.autograd.grad(fast, (q, k, v), g)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_fused_torch_softpick_gradcheck_with_adversarial_rows():
    from softpick.attention.torch_fused import softpick_weights_fused

    s = torch.tensor([[-150.0, -120.0, -101.0, -0.5], [85.0, 81.0, -300.0, 0.3], [0.2, -0.1, -2.0, 1.5]],  # no exact 0: |e^x - 1| has a kink there
                     dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False], [True, True, True, True]])
    assert torch.autograd.gradcheck(lambda x: softpick_weights_fused(x, mask), (s,))
    fully_masked = softpick_weights_fused(s, torch.zeros_like(mask))
    assert fully_masked.abs().sum() == 0
