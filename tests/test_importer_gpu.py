"""softpick.importer against fla's own TransformerForCausalLM (fla's RMSNorm, rotary and SwiGLU kernels).

A random fla model is saved with save_pretrained, imported, and compared logit for logit:
  * softmax: fla's forward (float32) against ours (float32), and both against the float64 forward
    of tests/test_importer.py, which this validates against fla's real code;
  * softpick (attn_impl parallel_softpick_attn): upstream fla ignores attn_impl and would run softmax,
    so ours (the Triton kernel on CUDA, and the torch path) is compared with the float64 forward of
    the authors' fork's definition on the same weights.

fla's attention layer calls flash-attn's flash_attn_func (flash_attn_varlen_func for packed or padded
input), bound when fla.layers.attn is imported. flash-attn has no float32 and need not be installed:
`sdpa_flash_attn` sets those two names in fla.layers.attn to torch SDPA versions for the test's
duration. (Not a `flash_attn` entry in sys.modules: transformers' availability checks call find_spec
on it and fail on a module without a spec.)

    pytest -s tests/test_importer_gpu.py          # needs CUDA and fla (flash-linear-attention)

Skipped without CUDA or without fla. SOFTPICK_FLA_CPU=1 runs it on the CPU instead, fla's Triton kernels
under the Triton interpreter (TRITON_INTERPRET=1, which tests/conftest.py sets when there is no CUDA;
Triton's autotuner cannot time configurations there, so it takes the first) with a smaller model:

    SOFTPICK_FLA_CPU=1 PYTHONPATH=src:<dir holding fla> pytest -s tests/test_importer_gpu.py
"""
from __future__ import annotations

import json
import os

import pytest
import torch

ON_CPU = os.environ.get("SOFTPICK_FLA_CPU") == "1"
if ON_CPU:
    if os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError("SOFTPICK_FLA_CPU=1 runs fla's Triton kernels on the CPU, which needs TRITON_INTERPRET=1 "
                           "set before triton is imported (tests/conftest.py sets it when CUDA is absent)")
elif not torch.cuda.is_available():
    pytest.skip("needs CUDA (or SOFTPICK_FLA_CPU=1 for the Triton interpreter)", allow_module_level=True)
pytest.importorskip("fla.models", reason="fla (flash-linear-attention) is not installed")

from safetensors.torch import load_file  # noqa: E402
from test_importer import fla_reference_logits  # noqa: E402  (the float64 forward of fla's definitions)

from softpick.importer import import_fla_transformer  # noqa: E402

DEVICE = "cpu" if ON_CPU else "cuda"
# the interpreter runs each Triton program in numpy: a smaller model there
SHAPE = dict(hidden_size=64 if ON_CPU else 256, num_hidden_layers=2, num_heads=4, vocab_size=1000,
             max_position_embeddings=2048)
T = 40 if ON_CPU else 384
# float32 on both sides against float64: rounding (~1e-7) grown through two blocks of length-C and
# length-T sums stays near 1e-6 of the logit scale; 1e-4 leaves two orders of margin, and a wrong
# convention (RoPE pairing, norm eps, MLP order, softmax for softpick) moves logits by O(1).
RTOL = 1e-4


# ----------------------------------------------------------------------------- flash-attn through SDPA
def sdpa_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False, window_size=(-1, -1)):
    """flash_attn_func's contract: q [B, Tq, H, D], k / v [B, Tk, Hkv, D] (query head h reads key head
    h // (H / Hkv)), scale head_dim^-0.5 by default; out [B, Tq, H, D]."""
    if dropout_p or tuple(window_size) != (-1, -1):
        raise NotImplementedError(f"test shim: dropout_p={dropout_p}, window_size={window_size} not implemented")
    if causal and q.shape[1] != k.shape[1]:  # flash-attn aligns the mask bottom-right, SDPA top-left
        raise NotImplementedError(f"test shim: causal with {q.shape[1]} queries and {k.shape[1]} keys")
    o = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=causal, scale=softmax_scale,
        enable_gqa=k.shape[2] != q.shape[2])
    return o.transpose(1, 2)


def sdpa_flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, dropout_p=0.0,
                                softmax_scale=None, causal=False, window_size=(-1, -1)):
    """flash_attn_varlen_func's contract: packed q [total_q, H, D], k / v [total_k, Hkv, D], sequence i
    at rows cu_seqlens[i]:cu_seqlens[i + 1]; attention never crosses sequences."""
    out = torch.empty_like(q)
    for i in range(len(cu_seqlens_q) - 1):
        qs, qe, ks, ke = (int(x) for x in (cu_seqlens_q[i], cu_seqlens_q[i + 1], cu_seqlens_k[i], cu_seqlens_k[i + 1]))
        out[qs:qe] = sdpa_flash_attn_func(q[None, qs:qe], k[None, ks:ke], v[None, ks:ke], dropout_p, softmax_scale,
                                          causal, window_size)[0]
    return out


@pytest.fixture(scope="module")
def fla_attn():
    """fla.layers.attn calling the SDPA shim, float32 matmuls at full precision; on the CPU, Triton's
    autotuner takes the first configuration."""
    import fla.layers.attn

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fla.layers.attn, "flash_attn_func", sdpa_flash_attn_func)
        # without flash-attn, fla binds flash_attn_func = None and leaves flash_attn_varlen_func unbound
        mp.setattr(fla.layers.attn, "flash_attn_varlen_func", sdpa_flash_attn_varlen_func, raising=False)
        if ON_CPU:  # no driver to time kernels with under the interpreter
            from triton.runtime.autotuner import Autotuner

            mp.setattr(Autotuner, "_bench", lambda self, *args, config=None, **kwargs: [0.0, 0.0, 0.0])
        precision = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")  # float32 matmuls, not TF32 (RTOL assumes float32)
        try:
            yield fla.layers.attn
        finally:
            torch.set_float32_matmul_precision(precision)


# ----------------------------------------------------------------------------- the models
def fla_model(seed=0):
    """A random fla transformer, float32, with weights far from fla's init (std 0.006, near-uniform attention)."""
    from fla.models import TransformerConfig, TransformerForCausalLM

    config = TransformerConfig(**SHAPE, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=False)
    torch.manual_seed(seed)
    model = TransformerForCausalLM(config)
    proj_std = 1.3 / SHAPE["hidden_size"] ** 0.5  # attention scores of order 1-10
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else torch.randn_like(p) * (proj_std if "proj" in name else 1.0))
    return model.to(DEVICE).eval()


def token_ids():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, SHAPE["vocab_size"], (2, T), generator=g)
    ids[:, 0] = 1
    return ids


def fla_logits(model, ids, **kwargs):
    with torch.no_grad():
        return model(ids.to(DEVICE), use_cache=False, **kwargs).logits.float().cpu()


def our_logits(out_dir, backend):
    """Our model as the import saved it, loaded through the Auto classes."""
    from transformers import AutoModelForCausalLM

    import softpick.model  # noqa: F401  (registers the config)

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32).to(DEVICE).eval()
    model.config.attention_backend = backend
    with torch.no_grad():
        return model(token_ids().to(DEVICE)).logits.float().cpu()


def reference_logits(fla_dir, kind):
    """The float64 forward of tests/test_importer.py on the files fla saved."""
    ckpt = {"config": json.loads((fla_dir / "config.json").read_text()),
            "state_dict": load_file(str(fla_dir / "model.safetensors"))}
    return fla_reference_logits(ckpt, token_ids(), kind).float()


def relative_error(label, got, ref):
    err, scale = (got - ref).abs().max().item(), ref.abs().max().item()
    print(f"{label}: max |logit diff| {err:.3e}, logit scale {scale:.2f}, relative {err / scale:.2e}")
    return err / scale


# ----------------------------------------------------------------------------- the tests
def test_softmax_checkpoint_matches_fla(tmp_path, fla_attn):
    model = fla_model()
    fla_out = fla_logits(model, token_ids())
    model.save_pretrained(tmp_path / "fla")  # upstream fla: no attn_impl, imported as softmax
    assert "attn_impl" not in json.loads((tmp_path / "fla" / "config.json").read_text())
    import_fla_transformer(str(tmp_path / "fla"), tmp_path / "ours", expect_kind="softmax")
    ours = our_logits(tmp_path / "ours", "auto")
    ref = reference_logits(tmp_path / "fla", "softmax")
    assert relative_error("softmax: ours vs fla (float32 both)", ours, fla_out) < RTOL
    assert relative_error("softmax: fla vs the float64 forward", fla_out, ref) < RTOL
    assert relative_error("softmax: ours vs the float64 forward", ours, ref) < RTOL
    # fla on the two rows packed into one (cu_seqlens: flash_attn_varlen_func, rotary restarting at each row)
    ids = token_ids()
    packed = fla_logits(model, ids.reshape(1, -1), cu_seqlens=torch.tensor([0, T, 2 * T], device=DEVICE))
    assert relative_error("softmax: ours vs fla packed (varlen)", ours, packed.reshape(2, T, -1)) < RTOL


@pytest.mark.parametrize("backend", ["torch"] if ON_CPU else ["triton", "torch"])
def test_softpick_checkpoint_matches_the_forks_definition(tmp_path, fla_attn, backend):
    model = fla_model(seed=1)
    model.config.attn_impl = "parallel_softpick_attn"  # as the authors' fork writes it into config.json
    model.save_pretrained(tmp_path / "fla")
    import_fla_transformer(str(tmp_path / "fla"), tmp_path / "ours", expect_kind="softpick")
    ours = our_logits(tmp_path / "ours", backend)
    ref = reference_logits(tmp_path / "fla", "softpick")
    err = relative_error(f"softpick: ours ({backend}) vs the fork's definition in float64", ours, ref)
    assert err < RTOL
    # the trap: stock fla runs softmax on this checkpoint, another model's logits
    gap = relative_error("softpick: stock fla (softmax) vs the fork's definition", fla_logits(model, token_ids()), ref)
    assert gap > 100 * max(err, 1e-6)
