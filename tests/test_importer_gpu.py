"""softpick.importer against fla itself, on a GPU: a random fla TransformerForCausalLM (fla's own RMSNorm,
rotary and SwiGLU kernels) saved with save_pretrained, imported, and compared logit for logit.

    pytest tests/test_importer_gpu.py -s      # prints what it compared

Skipped without CUDA or without fla (pip install flash-linear-attention). Upstream fla's attention layer
calls flash_attn_func after RoPE; the test sets that module global: to flash-attn itself when installed
(bf16 comparison), else to torch SDPA softmax, and to the authors' fork's softpick definition (their
naive_softpick_attn: relu(e^x - 1) / (sum |e^x - 1| + 1e-8), rescaled by the row max) for the softpick
checkpoint, which is exactly where the fork's layer calls its softpick attention. Our side runs its
own kernels (SDPA for softmax; the Triton softpick kernel, and the torch path, for softpick)."""
from __future__ import annotations

import json

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("needs CUDA", allow_module_level=True)
fla = pytest.importorskip("fla")
fla_attn = pytest.importorskip("fla.layers.attn")

from softpick.importer import import_fla_transformer  # noqa: E402

SHAPE = dict(hidden_size=256, num_hidden_layers=2, num_heads=4, vocab_size=1000, max_position_embeddings=2048)
T = 384


def sdpa_softmax(q, k, v, causal=True, **_):
    """flash_attn_func's contract ([B, T, H, D] in and out), softmax through torch SDPA."""
    o = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                         is_causal=causal, enable_gqa=k.shape[2] != q.shape[2])
    return o.transpose(1, 2)


def fork_softpick(q, k, v, causal=True, **_):
    """The authors' fork, naive_softpick_attn with scale head_dim^-0.5 (what parallel_softpick_attn computes)."""
    qh, kh, vh = (x.transpose(1, 2).float() for x in (q, k, v))
    if kh.shape[1] != qh.shape[1]:
        kh, vh = (x.repeat_interleave(qh.shape[1] // x.shape[1], dim=1) for x in (kh, vh))
    s = qh @ kh.transpose(-1, -2) * q.shape[-1] ** -0.5
    n = s.shape[-1]
    s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=s.device).tril(), float("-inf"))
    m = s.max(-1, keepdim=True).values
    e = torch.exp(s - m) - torch.exp(-m)
    w = torch.relu(e) / (torch.where(torch.isfinite(s), e.abs(), 0).sum(-1, keepdim=True) + 1e-8)
    return (w @ vh).transpose(1, 2).to(q.dtype)


def fla_model(monkeypatch, attention, dtype=torch.float32, seed=0):
    """A random fla transformer whose layers call `attention` where they call flash_attn_func."""
    from fla.models import TransformerConfig, TransformerForCausalLM

    monkeypatch.setattr(fla_attn, "flash_attn_func", attention)
    config = TransformerConfig(**SHAPE, fuse_norm=True, fuse_swiglu=True, fuse_cross_entropy=False)
    torch.manual_seed(seed)
    model = TransformerForCausalLM(config)
    with torch.no_grad():  # larger than fla's init (std 0.006), so attention is far from uniform
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if "norm" in name else torch.randn_like(p) * (0.08 if "proj" in name else 1.0))
    return model.to("cuda", dtype).eval()


def _ids():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, SHAPE["vocab_size"], (2, T), generator=g)
    ids[:, 0] = 1
    return ids.cuda()


def _ours(out_dir, backend="auto", dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    import softpick.model  # noqa: F401

    model = AutoModelForCausalLM.from_pretrained(out_dir, dtype=dtype).cuda().eval()
    model.config.attention_backend = backend
    with torch.no_grad():
        return model(_ids()).logits.float()


def _compare(label, ours, ref, rtol):
    err, scale = (ours - ref).abs().max().item(), ref.abs().max().item()
    print(f"{label}: max |logit diff| {err:.3e}, logit scale {scale:.2f}, relative {err / scale:.2e}")
    assert err <= rtol * scale, label


def test_softmax_checkpoint_matches_fla(tmp_path, monkeypatch):
    model = fla_model(monkeypatch, sdpa_softmax)
    with torch.no_grad():
        ref = model(_ids()).logits.float()
    model.save_pretrained(tmp_path / "fla")  # no attn_impl: upstream fla, imported as softmax
    assert "attn_impl" not in json.loads((tmp_path / "fla" / "config.json").read_text())
    import_fla_transformer(str(tmp_path / "fla"), tmp_path / "ours", expect_kind="softmax")
    _compare("softmax fp32, fla (its norm / rotary / swiglu kernels, SDPA) vs ours", _ours(tmp_path / "ours"), ref, 1e-4)
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        print("flash-attn not installed: the bf16 comparison against fla's own flash-attn path is skipped")
        return
    model = fla_model(monkeypatch, flash_attn_func, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(_ids()).logits.float()
    _compare("softmax bf16, fla with flash-attn vs ours (bf16)", _ours(tmp_path / "ours", dtype=torch.bfloat16), ref, 5e-2)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_softpick_checkpoint_matches_the_forks_definition(tmp_path, monkeypatch, backend):
    model = fla_model(monkeypatch, fork_softpick)
    with torch.no_grad():
        ref = model(_ids()).logits.float()
    model.config.attn_impl = "parallel_softpick_attn"  # as the fork writes it into config.json
    model.save_pretrained(tmp_path / "fla")
    import_fla_transformer(str(tmp_path / "fla"), tmp_path / "ours", expect_kind="softpick")
    ours = _ours(tmp_path / "ours", backend=backend)
    _compare(f"softpick fp32, fla + the fork's softpick vs ours ({backend} backend)", ours, ref, 1e-4)
    # the trap: stock fla on this checkpoint runs softmax, and its logits are another model's
    monkeypatch.setattr(fla_attn, "flash_attn_func", sdpa_softmax)
    with torch.no_grad():
        stock = model(_ids()).logits.float()
    gap = (stock - ref).abs().max().item()
    print(f"stock fla (softmax) on the softpick checkpoint differs from softpick by {gap:.2f} in the logits")
    assert gap > 100 * (ours - ref).abs().max().item()
