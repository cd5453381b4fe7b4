"""A Llama-style decoder whose attention function is chosen by config (softmax, softpick or a variant).

Pre-RMSNorm, RoPE, SwiGLU MLP, no biases, untied embeddings, as in the paper's models
(arXiv 2504.20966). It is a transformers PreTrainedModel, so save_pretrained / from_pretrained and
lm-evaluation-harness work on it; importing this module registers it with the Auto classes.

hidden_states (output_hidden_states=True) holds num_layers + 2 tensors: the embedding output,
the residual stream after each layer, and the final normed output, the population that the
paper's kurtosis / massive-activation metrics pool.
attentions (output_attentions=True) holds one [B, H, T, T] weight tensor per layer (reference path).
KV cache: `use_cache=True` (generate's default) keeps each layer's keys / values in a transformers
DynamicCache, so a decoding step runs only the new tokens (positions continue after the cached ones).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import AutoConfig, AutoModelForCausalLM, DynamicCache, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .attention import BACKENDS, KINDS, KindParameters, attention, get_kind


_PACKAGE_MODULE = "softpick.model"  # this file's name when installed; its remote-code copy has another


class SoftpickConfig(PretrainedConfig):
    model_type = "softpick_llama"

    def __init__(
        self,
        vocab_size: int = 32000,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        num_key_value_heads: int | None = None,
        intermediate_size: int = 2816,
        max_position_embeddings: int = 4096,
        rope_theta: float = 10000.0,
        rms_norm_eps: float = 1e-6,
        initializer_range: float = 0.006,
        attention_kind: str = "softpick",
        attention_backend: str = "auto",
        bos_token_id: int = 1,
        eos_token_id: int = 2,
        pad_token_id: int | None = None,
        **kwargs,
    ):
        if attention_kind not in KINDS:
            raise ValueError(f"attention_kind {attention_kind!r} is not one of {KINDS}")
        if attention_backend not in BACKENDS:
            raise ValueError(f"attention_backend {attention_backend!r} is not one of {BACKENDS}")
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_attention_heads {num_attention_heads}")
        num_key_value_heads = num_key_value_heads or num_attention_heads
        if num_attention_heads % num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.intermediate_size = intermediate_size
        self.max_position_embeddings = max_position_embeddings
        self.rope_theta = rope_theta
        self.rms_norm_eps = rms_norm_eps
        self.initializer_range = initializer_range
        self.attention_kind = attention_kind
        self.attention_backend = attention_backend
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' save_pretrained plus, from the installed package, the generated modeling code and
        `auto_map` (softpick.hf_export): the directory loads with trust_remote_code=True without softpick.
        (A remote-code copy of this class is saved with its code by transformers itself.)"""
        if __name__ != _PACKAGE_MODULE:
            return super().save_pretrained(save_directory, *args, **kwargs)
        from .hf_export import AUTO_MAP, write_remote_code

        self.auto_map = dict(AUTO_MAP)
        super().save_pretrained(save_directory, *args, **kwargs)
        write_remote_code(save_directory)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * xf.to(x.dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype):
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [..., T, D/2]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, T, H, D]; cos / sin [B, T, D] (or [T, D])."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return x * cos.unsqueeze(-2) + rotated * sin.unsqueeze(-2)


class Attention(nn.Module):
    def __init__(self, config: SoftpickConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx  # this layer's slot in the KV cache
        self.n_heads = config.num_attention_heads
        self.n_kv = config.num_key_value_heads
        self.head_dim = config.head_dim
        C = config.hidden_size
        self.q_proj = nn.Linear(C, self.n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(C, self.n_kv * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, C, bias=False)
        self.kind_params = get_kind(config.attention_kind).make_params(config)  # learned per-kind parameters, or None

    def forward(self, x, cos, sin, attention_mask, output_attentions: bool, cache=None):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.n_kv, self.head_dim)
        v = self.v_proj(x).view(B, T, self.n_kv, self.head_dim)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        # KV cache: append this step's keys / values (the Cache API stores [B, Hkv, S, D]), attend over all
        if cache is not None:
            k, v = (t.transpose(1, 2) for t in cache.update(k.transpose(1, 2), v.transpose(1, 2), self.layer_idx))
        out, weights = attention(
            q, k, v,
            kind=self.config.attention_kind,
            causal=True,
            attention_mask=attention_mask,
            return_weights=output_attentions,
            backend=self.config.attention_backend,
            params=self.kind_params,
            layer_input=x,
        )
        return self.o_proj(out.reshape(B, T, -1)), weights


class MLP(nn.Module):
    def __init__(self, config: SoftpickConfig):
        super().__init__()
        C, M = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(C, M, bias=False)
        self.up_proj = nn.Linear(C, M, bias=False)
        self.down_proj = nn.Linear(M, C, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, config: SoftpickConfig, layer_idx: int = 0):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, attention_mask, output_attentions: bool, cache=None):
        a, weights = self.self_attn(self.input_layernorm(x), cos, sin, attention_mask, output_attentions, cache)
        x = x + a
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x, weights


class SoftpickPreTrainedModel(PreTrainedModel):
    config_class = SoftpickConfig
    base_model_prefix = "model"
    _no_split_modules = ["DecoderLayer"]
    supports_gradient_checkpointing = False

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """transformers' save_pretrained (the config adds the modeling code); from the installed package, the
        files it wrote then get open()'s mode (safetensors writes 0600) and the directory a manifest.json of
        their sha256, which the pipeline checks before loading (softpick.hf_export.verify_model_dir)."""
        if __name__ != _PACKAGE_MODULE or not is_main_process:
            return super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        from .hf_export import file_stamps, finish_save

        before = file_stamps(save_directory)
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        finish_save(save_directory, before)

    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, KindParameters):
            module.init_weights(std)


class SoftpickModel(SoftpickPreTrainedModel):
    def __init__(self, config: SoftpickConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def set_input_embeddings(self, value):
        self.embed_tokens = value

    def forward(self, input_ids, attention_mask=None, position_ids=None,
                output_attentions: bool = False, output_hidden_states: bool = False, cache=None):
        B, T = input_ids.shape
        x = self.embed_tokens(input_ids)
        past = cache.get_seq_length() if cache is not None else 0  # tokens already in the KV cache
        if position_ids is None:
            position_ids = torch.arange(past, past + T, device=input_ids.device)[None].expand(B, T)
        cos, sin = rope_tables(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        hidden = [x] if output_hidden_states else None
        attns = [] if output_attentions else None
        for layer in self.layers:
            x, w = layer(x, cos, sin, attention_mask, output_attentions, cache)
            if output_hidden_states:
                hidden.append(x)
            if output_attentions:
                attns.append(w)
        x = self.norm(x)
        if output_hidden_states:
            hidden.append(x)
        return x, (tuple(hidden) if hidden is not None else None), (tuple(attns) if attns is not None else None)


class SoftpickForCausalLM(SoftpickPreTrainedModel, GenerationMixin):
    def __init__(self, config: SoftpickConfig):
        super().__init__(config)
        self.model = SoftpickModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def forward(self, input_ids, attention_mask=None, position_ids=None, labels=None,
                output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                return_dict: bool | None = None, targets=None, cache=None, past_key_values=None,
                use_cache: bool | None = None, **kwargs):
        """labels: transformers' convention (shifted inside). targets: the next token of every input
        position, already aligned (the trainer's): the loss is then computed in this forward, so a
        compiled model fuses the fp32 upcast and cross-entropy with lm_head, and no logits are returned.
        cache (transformers >= 5; past_key_values before): a Cache to extend; use_cache=True starts one."""
        cache = cache if cache is not None else past_key_values
        if cache is None and use_cache:
            cache = DynamicCache()
        h, hidden, attns = self.model(
            input_ids, attention_mask=attention_mask, position_ids=position_ids,
            output_attentions=bool(output_attentions), output_hidden_states=bool(output_hidden_states), cache=cache,
        )
        logits = self.lm_head(h)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
            logits = None
        elif labels is not None:
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=hidden, attentions=attns,
                                      **({_CACHE_FIELD: cache} if cache is not None else {}))


# the output's cache field: "cache" in transformers >= 5, "past_key_values" before
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


AutoConfig.register(SoftpickConfig.model_type, SoftpickConfig, exist_ok=True)
AutoModelForCausalLM.register(SoftpickConfig, SoftpickForCausalLM, exist_ok=True)


def build_model(model_cfg: dict, variant: str, vocab_size: int, seq_len: int) -> SoftpickForCausalLM:
    """A freshly initialised model of the config's `model` section with attention kind `variant`."""
    cfg = SoftpickConfig(
        vocab_size=vocab_size,
        max_position_embeddings=seq_len,
        attention_kind=variant,
        **{k: v for k, v in model_cfg.items()},
    )
    return SoftpickForCausalLM(cfg)


def count_parameters(model: nn.Module, non_embedding: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if non_embedding and hasattr(model, "model"):
        n -= model.model.embed_tokens.weight.numel()
    return n
