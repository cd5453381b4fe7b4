"""An fla `transformer` config.json as this package's SoftpickConfig, and the attn_impl table.

What fla's code defines (fla/models/transformer, fla/layers/attn.py, fla/modules; the authors' fork
of fla for `attn_impl`):
  * pre-RMSNorm blocks, y = x / sqrt(mean(x^2) + norm_eps) * w (fused or nn.RMSNorm, same math);
  * RoPE through fla.modules.RotaryEmbedding with interleaved=False, i.e. the rotate-half (GPT-NeoX)
    convention over the whole head, inv_freq = rope_theta^(-2i/d): the convention of softpick.model;
  * attention scale head_dim^-0.5, GQA key/value head = query head // (num_heads / num_kv_heads);
  * SwiGLU MLP down(silu(gate(x)) * up(x)); intermediate_size, when null, is the multiple of 256 at
    or above int(hidden_size * hidden_ratio * 2 / 3) (hidden_ratio null = 4);
  * untied lm_head unless tie_word_embeddings.
Upstream fla has no `attn_impl` (its layer always runs flash-attn softmax); only the authors' fork
reads it. A checkpoint without attn_impl therefore is softmax (logged); an attn_impl not in
ATTN_IMPL_KINDS is refused by name, never replaced by another attention.
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger("softpick.importer")  # one logger for the whole import

FLA_MODEL_TYPE = "transformer"
# attn_impl (the authors' fla fork) -> our attention kind. naive_* are the materialised versions the
# authors' analysis swaps in; parallel_* their Triton kernels; flash_attn the fork's default (softmax).
ATTN_IMPL_KINDS: dict[str, str] = {
    "flash_attn": "softmax",
    "parallel_attn": "softmax",
    "naive_attn": "softmax",
    "parallel_softpick_attn": "softpick",
    "naive_softpick_attn": "softpick",
    "parallel_scaled_softpick_attn": "scaled_softpick",
    "naive_scaled_softpick_attn": "scaled_softpick",
    "parallel_rectified_attn": "rectified_softmax",
    "naive_rectified_attn": "rectified_softmax",
    "parallel_relu_softpick_1_attn": "relu_softmax",
    "naive_relu_softpick_1_attn": "relu_softmax",
    "parallel_softmax_plus_one_attn": "softmax_plus_one",
    "naive_softmax_plus_one_attn": "softmax_plus_one",
}
# fla's TransformerConfig defaults: what a config.json without the key means
FLA_DEFAULTS: dict = {
    "hidden_size": 2048, "num_hidden_layers": 24, "num_heads": 32, "num_kv_heads": None, "qkv_bias": False,
    "qk_norm": False, "window_size": None, "rope_theta": 10000.0, "max_position_embeddings": 2048,
    "hidden_ratio": 4, "intermediate_size": None, "hidden_act": "swish", "initializer_range": 0.006,
    "norm_eps": 1e-6, "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2, "tie_word_embeddings": False,
    "vocab_size": 32000, "attnres_block_size": None,
}
# keys whose other values change the forward pass in a way our model does not implement: key -> the value we run
UNSUPPORTED = {"qk_norm": False, "qkv_bias": False, "window_size": None, "attnres_block_size": None,
               "hidden_act": "swish", "use_myopic_loss": False}
REQUIRED_NUMBERS = ("hidden_size", "num_hidden_layers", "num_heads", "vocab_size", "rope_theta", "norm_eps",
                    "max_position_embeddings", "initializer_range")


class CheckpointFormatError(ValueError):
    """The checkpoint is not an fla transformer this importer can map; the message names the key / tensor."""


def read_fla_config(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a transformers checkpoint directory")
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointFormatError(f"{path} is not valid JSON ({err})") from None
    if cfg.get("model_type") != FLA_MODEL_TYPE:
        raise CheckpointFormatError(f"{path}: model_type {cfg.get('model_type')!r} is not fla's {FLA_MODEL_TYPE!r}")
    return cfg


def attention_kind(fla_cfg: dict, where: str = "config.json") -> tuple[str, str | None]:
    """(our kind, attn_impl) of an fla config; an unknown attn_impl is refused by name."""
    impl = fla_cfg.get("attn_impl")
    if impl is None:
        log.info("%s has no attn_impl: an upstream fla transformer, whose attention is always softmax "
                 "(flash-attn); importing it as softmax", where)
        return "softmax", None
    if impl not in ATTN_IMPL_KINDS:
        raise CheckpointFormatError(
            f"{where}: attn_impl {impl!r} has no equivalent attention kind here; known: {', '.join(sorted(ATTN_IMPL_KINDS))}")
    return ATTN_IMPL_KINDS[impl], impl


def fla_intermediate_size(hidden_size: int, hidden_ratio, intermediate_size) -> int:
    """fla's GatedMLP width: intermediate_size, else 256 * ceil(int(hidden * ratio * 2/3) / 256)."""
    if intermediate_size is not None:
        return int(intermediate_size)
    ratio = 4 if hidden_ratio is None else hidden_ratio
    return 256 * math.ceil(int(hidden_size * ratio * 2 / 3) / 256)


def softpick_config(fla_cfg: dict, where: str = "config.json", provenance: dict | None = None):
    """The SoftpickConfig equivalent to an fla transformer config (refusing what our model cannot run)."""
    from .model import SoftpickConfig

    c = {**FLA_DEFAULTS, **{k: v for k, v in fla_cfg.items() if k in FLA_DEFAULTS}}
    for k, ours in UNSUPPORTED.items():
        value = fla_cfg.get(k)
        if value is not None and value != ours:
            raise CheckpointFormatError(f"{where}: {k} = {value!r} is not supported (the model here implements {k} = {ours!r})")
    for k in REQUIRED_NUMBERS:
        if not isinstance(c[k], (int, float)) or isinstance(c[k], bool) or c[k] <= 0:
            raise CheckpointFormatError(f"{where}: {k} = {c[k]!r} is not a positive number")
    kind, impl = attention_kind(fla_cfg, where)
    hidden, heads = int(c["hidden_size"]), int(c["num_heads"])
    if hidden % heads:
        raise CheckpointFormatError(f"{where}: hidden_size {hidden} is not divisible by num_heads {heads}")
    return SoftpickConfig(
        vocab_size=int(c["vocab_size"]), hidden_size=hidden, num_hidden_layers=int(c["num_hidden_layers"]),
        num_attention_heads=heads, num_key_value_heads=c["num_kv_heads"],
        intermediate_size=fla_intermediate_size(hidden, c["hidden_ratio"], c["intermediate_size"]),
        max_position_embeddings=int(c["max_position_embeddings"]), rope_theta=float(c["rope_theta"]),
        rms_norm_eps=float(c["norm_eps"]), initializer_range=float(c["initializer_range"]), attention_kind=kind,
        bos_token_id=c["bos_token_id"], eos_token_id=c["eos_token_id"], pad_token_id=c["pad_token_id"],
        imported_from={"attn_impl": impl, "model_type": FLA_MODEL_TYPE, **(provenance or {})},
    ), impl
