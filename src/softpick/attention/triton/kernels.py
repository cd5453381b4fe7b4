"""Triton kernels of softpick flash attention (forward, backward preprocess, dK/dV, dQ).

Layout (contiguous, token-major, as fla and FlashAttention):
    q, o, dq   [N_tok, H, D]     N_tok = B * T  (or the packed total with cu_seqlens, B = 1)
    k, v, dk, dv [N_kv_tok, Hkv, D]   H a multiple of Hkv (GQA / MQA: query head h reads kv head h // G)
    lse, delta [H, N_tok] float32  (per-row log2-denominator and rowsum(o * do))

Softpick with the reference point m = max(0, rowmax of unmasked scores), in base 2
(s2 = score * log2(e), m2 = m * log2(e)):
    p   = relu(2^(s2 - m2) - 2^(-m2)) / den
    den = sum_unmasked |2^(s2 - m2) - 2^(-m2)| + EPS * 2^(-m2)   (EPS in the unscaled denominator, as reference.py)
The forward keeps m2 and den online (rescaled by 2^(m_old - m_new) like softmax) and saves
lse = m2 + log2(den). The backward needs only lse:
    E = 2^(s2 - lse) = e^(s - m) / den,      p = [s > 0] * (E - 2^(-lse))
    ds = E * ([s > 0] dp - sign(s) * delta), delta = rowsum(o * do)
Masking trick: a masked (or zero-padded) score is replaced by exactly 0. Because m2 >= 0,
such an entry gives 2^(0 - m2) - 2^(-m2) = 0 exactly (no weight, no denominator share, no
effect on the max), and in the backward s = 0 gives p = 0 and ds = 0. So out-of-range keys
loaded as zeros need no masking at all, and causal masking is one select on diagonal blocks.
"""
from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _sequence_bounds(cu_seqlens, i_n, T, S, IS_VARLEN: tl.constexpr):
    """Sequence i_n: first query row, first key row, query and key lengths (varlen: packed, S = T)."""
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        Tq = (eos - bos).to(tl.int32)
        Sk = Tq
        kbos = bos
    else:
        bos = i_n.to(tl.int64) * T
        kbos = i_n.to(tl.int64) * S
        Tq = T
        Sk = S
    return bos, kbos, Tq, Sk


@triton.jit
def _fwd_inner(
    acc, m_i, den, q, k_base, v_base, offs_m, offs_d, n_lo, n_hi, Sk, off, qk_scale,
    stride_k, D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    CAUSAL_MASK: tl.constexpr, IEEE: tl.constexpr,
):
    offs_n = tl.arange(0, BLOCK_N)
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_n
        kmask = cols[None, :] < Sk
        if BLOCK_D != D:
            kmask = kmask & (offs_d[:, None] < D)
        kT = tl.load(k_base + cols[None, :] * stride_k + offs_d[:, None], mask=kmask, other=0.0)
        # raw (unscaled) scores; qk_scale > 0, so max and sign commute with the scaling, which
        # folds into the exp2 argument as one FFMA per score
        if IEEE:
            s = tl.dot(q, kT, input_precision="ieee")
        else:
            s = tl.dot(q, kT)
        if CAUSAL_MASK:
            s = tl.where(offs_m[:, None] + off >= cols[None, :], s, 0.0)
        m_new = tl.maximum(m_i, tl.max(s, 1) * qk_scale)
        alpha = tl.math.exp2(m_i - m_new)
        base = tl.math.exp2(-m_new)
        diff = tl.math.exp2(s * qk_scale - m_new[:, None]) - base[:, None]
        p = tl.maximum(diff, 0.0)
        den = den * alpha + tl.sum(tl.abs(diff), 1)
        vmask = cols[:, None] < Sk
        if BLOCK_D != D:
            vmask = vmask & (offs_d[None, :] < D)
        v = tl.load(v_base + cols[:, None] * stride_k + offs_d[None, :], mask=vmask, other=0.0)
        acc = acc * alpha[:, None]
        if IEEE:
            acc = tl.dot(p.to(v.dtype), v, acc, input_precision="ieee")
        else:
            acc = tl.dot(p.to(v.dtype), v, acc)
        m_i = m_new
    return acc, m_i, den


@triton.jit
def softpick_fwd_kernel(
    Q, K, V, O, LSE, cu_seqlens, qk_scale, T, S, TOT, H: tl.constexpr, G: tl.constexpr,
    D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    CAUSAL: tl.constexpr, IS_VARLEN: tl.constexpr, IEEE: tl.constexpr, EPS: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_nh = tl.program_id(1)
    i_n = pid_nh // H
    i_h = pid_nh % H
    HKV: tl.constexpr = H // G
    i_hkv = i_h // G
    bos, kbos, Tq, Sk = _sequence_bounds(cu_seqlens, i_n, T, S, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= Tq:
        return
    off = Sk - Tq  # causal: the last query sees the last key
    stride_q: tl.constexpr = H * D
    stride_k: tl.constexpr = HKV * D
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    qmask = offs_m[:, None] < Tq
    if BLOCK_D != D:
        qmask = qmask & (offs_d[None, :] < D)
    q = tl.load(Q + (bos + offs_m[:, None]) * stride_q + i_h * D + offs_d[None, :], mask=qmask, other=0.0)
    k_base = K + kbos * stride_k + i_hkv * D
    v_base = V + kbos * stride_k + i_hkv * D

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # m >= 0: starting at 0 is the clamp
    den = tl.zeros([BLOCK_M], dtype=tl.float32)
    if CAUSAL:
        hi = tl.minimum(Sk, start_m + BLOCK_M + off)
        split = tl.maximum(start_m + off + 1, 0) // BLOCK_N * BLOCK_N
        split = tl.minimum(split, tl.maximum(hi, 0))
        acc, m_i, den = _fwd_inner(acc, m_i, den, q, k_base, v_base, offs_m, offs_d, 0, split, Sk, off,
                                   qk_scale, stride_k, D, BLOCK_N, BLOCK_D, False, IEEE)
        acc, m_i, den = _fwd_inner(acc, m_i, den, q, k_base, v_base, offs_m, offs_d, split, hi, Sk, off,
                                   qk_scale, stride_k, D, BLOCK_N, BLOCK_D, True, IEEE)
    else:
        acc, m_i, den = _fwd_inner(acc, m_i, den, q, k_base, v_base, offs_m, offs_d, 0, Sk, Sk, off,
                                   qk_scale, stride_k, D, BLOCK_N, BLOCK_D, False, IEEE)
    den = den + EPS * tl.math.exp2(-m_i)
    acc = acc / den[:, None]
    lse = m_i + tl.math.log2(den)
    tl.store(O + (bos + offs_m[:, None]) * stride_q + i_h * D + offs_d[None, :], acc.to(O.dtype.element_ty),
             mask=qmask)
    tl.store(LSE + i_h.to(tl.int64) * TOT + bos + offs_m, lse, mask=offs_m < Tq)


@triton.jit
def softpick_bwd_preprocess_kernel(O, DO, DELTA, TOT, H: tl.constexpr, D: tl.constexpr,
                                   BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr):
    pid_m = tl.program_id(0)
    i_h = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (offs_m[:, None] < TOT) & (offs_d[None, :] < D)
    ptr = offs_m[:, None].to(tl.int64) * (H * D) + i_h * D + offs_d[None, :]
    o = tl.load(O + ptr, mask=mask, other=0.0).to(tl.float32)
    do = tl.load(DO + ptr, mask=mask, other=0.0).to(tl.float32)
    tl.store(DELTA + i_h.to(tl.int64) * TOT + offs_m, tl.sum(o * do, 1), mask=offs_m < TOT)


@triton.jit
def _bwd_dkdv_inner(
    dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, offs_d, m_lo, m_hi, Tq, off, qk_scale,
    stride_q, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL_MASK: tl.constexpr,
    IEEE: tl.constexpr,
):
    offs_mb = tl.arange(0, BLOCK_M)
    for start_m in range(m_lo, m_hi, BLOCK_M):
        rows = start_m + offs_mb
        qtmask = rows[None, :] < Tq
        if BLOCK_D != D:
            qtmask = qtmask & (offs_d[:, None] < D)
        qT = tl.load(q_base + rows[None, :] * stride_q + offs_d[:, None], mask=qtmask, other=0.0)
        lse = tl.load(lse_base + rows, mask=rows < Tq, other=0.0)
        if IEEE:
            sT = tl.dot(k, qT, input_precision="ieee")
        else:
            sT = tl.dot(k, qT)
        if CAUSAL_MASK:
            sT = tl.where(rows[None, :] + off >= offs_n[:, None], sT, 0.0)
        eT = tl.math.exp2(sT * qk_scale - lse[None, :])
        pos = sT > 0.0
        pT = tl.where(pos, eT - tl.math.exp2(-lse)[None, :], 0.0)
        domask = rows[:, None] < Tq
        if BLOCK_D != D:
            domask = domask & (offs_d[None, :] < D)
        do = tl.load(do_base + rows[:, None] * stride_q + offs_d[None, :], mask=domask, other=0.0)
        delta = tl.load(delta_base + rows, mask=rows < Tq, other=0.0)
        if IEEE:
            dv = tl.dot(pT.to(do.dtype), do, dv, input_precision="ieee")
            dpT = tl.dot(v, tl.trans(do), input_precision="ieee")
        else:
            dv = tl.dot(pT.to(do.dtype), do, dv)
            dpT = tl.dot(v, tl.trans(do))
        if CAUSAL_MASK:
            # masked scores are exactly 0 and must give ds = 0 (sign(0) = 0)
            dsT = eT * tl.where(pos, dpT - delta[None, :], tl.where(sT < 0.0, delta[None, :], 0.0))
        else:
            # off the diagonal an exact 0 score is measure-zero; treating it as negative is
            # harmless even for zero-padded rows / keys (delta = 0 there, or k = 0 multiplies it)
            dsT = eT * tl.where(pos, dpT - delta[None, :], delta[None, :])
        if IEEE:
            dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk, input_precision="ieee")
        else:
            dk = tl.dot(dsT.to(qT.dtype), tl.trans(qT), dk)
    return dk, dv


@triton.jit
def softpick_bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, cu_seqlens, qk_scale, sm_scale, T, S, TOT,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, IS_VARLEN: tl.constexpr, IEEE: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_nh = tl.program_id(1)
    HKV: tl.constexpr = H // G
    i_n = pid_nh // HKV
    i_hkv = pid_nh % HKV
    bos, kbos, Tq, Sk = _sequence_bounds(cu_seqlens, i_n, T, S, IS_VARLEN)
    start_n = pid_n * BLOCK_N
    if start_n >= Sk:
        return
    off = Sk - Tq
    stride_q: tl.constexpr = H * D
    stride_k: tl.constexpr = HKV * D
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kmask = offs_n[:, None] < Sk
    if BLOCK_D != D:
        kmask = kmask & (offs_d[None, :] < D)
    kv_off = (kbos + offs_n[:, None]) * stride_k + i_hkv * D + offs_d[None, :]
    k = tl.load(K + kv_off, mask=kmask, other=0.0)
    v = tl.load(V + kv_off, mask=kmask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        # rows i see key j iff i + off >= j
        m_lo = tl.maximum(start_n - off, 0) // BLOCK_M * BLOCK_M
        m_split = tl.maximum(start_n + BLOCK_N - 1 - off + BLOCK_M - 1, 0) // BLOCK_M * BLOCK_M
        m_split = tl.maximum(tl.minimum(m_split, Tq), m_lo)
    else:
        m_lo = 0
        m_split = 0
    for g in range(G):
        i_h = i_hkv * G + g
        q_base = Q + bos * stride_q + i_h * D
        do_base = DO + bos * stride_q + i_h * D
        lse_base = LSE + i_h.to(tl.int64) * TOT + bos
        delta_base = DELTA + i_h.to(tl.int64) * TOT + bos
        if CAUSAL:
            dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                                     m_lo, m_split, Tq, off, qk_scale, stride_q, D, BLOCK_M, BLOCK_D, True, IEEE)
        dk, dv = _bwd_dkdv_inner(dk, dv, k, v, q_base, do_base, lse_base, delta_base, offs_n, offs_d,
                                 m_split, Tq, Tq, off, qk_scale, stride_q, D, BLOCK_M, BLOCK_D, False, IEEE)
    dk = dk * sm_scale
    tl.store(DK + kv_off, dk.to(DK.dtype.element_ty), mask=kmask)
    tl.store(DV + kv_off, dv.to(DV.dtype.element_ty), mask=kmask)


@triton.jit
def _bwd_dq_inner(
    dq, q, do, lse, delta, k_base, v_base, offs_m, offs_d, n_lo, n_hi, Sk, off, qk_scale, stride_k,
    D: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, CAUSAL_MASK: tl.constexpr,
    IEEE: tl.constexpr,
):
    offs_nb = tl.arange(0, BLOCK_N)
    for start_n in range(n_lo, n_hi, BLOCK_N):
        cols = start_n + offs_nb
        ktmask = cols[None, :] < Sk
        if BLOCK_D != D:
            ktmask = ktmask & (offs_d[:, None] < D)
        kT = tl.load(k_base + cols[None, :] * stride_k + offs_d[:, None], mask=ktmask, other=0.0)
        vT = tl.load(v_base + cols[None, :] * stride_k + offs_d[:, None], mask=ktmask, other=0.0)
        if IEEE:
            s = tl.dot(q, kT, input_precision="ieee")
            dp = tl.dot(do, vT, input_precision="ieee")
        else:
            s = tl.dot(q, kT)
            dp = tl.dot(do, vT)
        if CAUSAL_MASK:
            s = tl.where(offs_m[:, None] + off >= cols[None, :], s, 0.0)
        e = tl.math.exp2(s * qk_scale - lse[:, None])
        if CAUSAL_MASK:
            ds = e * tl.where(s > 0.0, dp - delta[:, None], tl.where(s < 0.0, delta[:, None], 0.0))
        else:
            ds = e * tl.where(s > 0.0, dp - delta[:, None], delta[:, None])
        if IEEE:
            dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq, input_precision="ieee")
        else:
            dq = tl.dot(ds.to(kT.dtype), tl.trans(kT), dq)
    return dq


@triton.jit
def softpick_bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, cu_seqlens, qk_scale, sm_scale, T, S, TOT,
    H: tl.constexpr, G: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, IS_VARLEN: tl.constexpr, IEEE: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_nh = tl.program_id(1)
    i_n = pid_nh // H
    i_h = pid_nh % H
    HKV: tl.constexpr = H // G
    i_hkv = i_h // G
    bos, kbos, Tq, Sk = _sequence_bounds(cu_seqlens, i_n, T, S, IS_VARLEN)
    start_m = pid_m * BLOCK_M
    if start_m >= Tq:
        return
    off = Sk - Tq
    stride_q: tl.constexpr = H * D
    stride_k: tl.constexpr = HKV * D
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    qmask = offs_m[:, None] < Tq
    if BLOCK_D != D:
        qmask = qmask & (offs_d[None, :] < D)
    q_off = (bos + offs_m[:, None]) * stride_q + i_h * D + offs_d[None, :]
    q = tl.load(Q + q_off, mask=qmask, other=0.0)
    do = tl.load(DO + q_off, mask=qmask, other=0.0)
    lse = tl.load(LSE + i_h.to(tl.int64) * TOT + bos + offs_m, mask=offs_m < Tq, other=0.0)
    delta = tl.load(DELTA + i_h.to(tl.int64) * TOT + bos + offs_m, mask=offs_m < Tq, other=0.0)
    k_base = K + kbos * stride_k + i_hkv * D
    v_base = V + kbos * stride_k + i_hkv * D
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if CAUSAL:
        hi = tl.minimum(Sk, start_m + BLOCK_M + off)
        split = tl.maximum(start_m + off + 1, 0) // BLOCK_N * BLOCK_N
        split = tl.minimum(split, tl.maximum(hi, 0))
        dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, offs_m, offs_d, 0, split, Sk, off, qk_scale,
                           stride_k, D, BLOCK_N, BLOCK_D, False, IEEE)
        dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, offs_m, offs_d, split, hi, Sk, off, qk_scale,
                           stride_k, D, BLOCK_N, BLOCK_D, True, IEEE)
    else:
        dq = _bwd_dq_inner(dq, q, do, lse, delta, k_base, v_base, offs_m, offs_d, 0, Sk, Sk, off, qk_scale,
                           stride_k, D, BLOCK_N, BLOCK_D, False, IEEE)
    dq = dq * sm_scale
    tl.store(DQ + q_off, dq.to(DQ.dtype.element_ty), mask=qmask)
