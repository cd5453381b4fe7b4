"""What an attention kind is: its weight formula, its learned parameters and its fast path.

A kind is the materialised weight function `weights(scores, mask, params)` over [B, H, T, S] scores
(masked entries get weight 0 and add nothing to any denominator) plus up to three hooks:

  make_params(config)            -> KindParameters | None   learned per-layer parameters (the model's
                                    Attention module owns them, so save_pretrained / from_pretrained carry them)
  prepare_query(q, params, S)    -> q                        e.g. scaled softpick's s_h * log(n) after RoPE
  finish(out, params, layer_input) -> out                    e.g. the gated kind's sigmoid gate on the output

and a fast path: `flash_kernel = "softpick"` (the Triton softpick kernel on CUDA), `sdpa = True` (torch's
scaled_dot_product_attention for softmax weights), `fused_softpick = True` (the hand-written autograd
softpick on CPU). A kind with none of these runs its reference. Only torch is imported here, so the
attention package can be shipped beside a saved model.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..reference import naive_attention


class KindParameters(nn.Module):
    """Learned parameters of one attention kind in one layer; the model's _init_weights calls init_weights."""

    def init_weights(self, std: float) -> None:  # noqa: ARG002 (nn.Linear children are initialised by the model)
        return None


class AttentionKind:
    name: str = ""
    label: str = ""             # for figures and tables
    formula: str = ""           # one line, for documentation (docs/variants.md)
    flash_kernel: str | None = None   # "softpick": the Triton softpick kernel applies (after prepare_query)
    sdpa: bool = False                # softmax weights: torch SDPA applies
    fused_softpick: bool = False      # softpick weights: the fused autograd function applies on CPU
    needs_layer_input: bool = False   # finish() reads the layer input
    color: str = ""                   # its colour in every figure (Okabe-Ito, colour-blind safe; distinct per kind)

    def weights(self, scores: torch.Tensor, mask: torch.Tensor | None, params: KindParameters | None) -> torch.Tensor:
        raise NotImplementedError

    def make_params(self, config) -> KindParameters | None:  # noqa: ARG002
        return None

    def prepare_query(self, q: torch.Tensor, params: KindParameters | None, num_keys: int) -> torch.Tensor:  # noqa: ARG002
        return q

    def finish(self, out: torch.Tensor, params: KindParameters | None, layer_input: torch.Tensor | None) -> torch.Tensor:  # noqa: ARG002
        return out

    @property
    def has_params(self) -> bool:
        return type(self).make_params is not AttentionKind.make_params

    def check_inputs(self, params, layer_input) -> None:
        if self.has_params and params is None:
            raise ValueError(f"attention kind {self.name!r} has learned parameters: pass params= (the Attention module's kind_params)")
        if self.needs_layer_input and layer_input is None:
            raise ValueError(f"attention kind {self.name!r} needs layer_input= (the input of the attention layer)")

    def reference(self, q, k, v, *, causal: bool = True, attention_mask=None, scale=None, params=None,
                  layer_input=None) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole kind, materialised: (out [B, T, H, D], weights [B, H, T, S])."""
        self.check_inputs(params, layer_input)
        q = self.prepare_query(q, params, k.shape[1])
        out, w = naive_attention(q, k, v, causal=causal, attention_mask=attention_mask, scale=scale,
                                 weights_fn=lambda s, m: self.weights(s, m, params))
        return self.finish(out, params, layer_input), w


def masked_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Scores with masked entries at -inf (mask None: unchanged)."""
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def per_head(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[H] -> [1, H, 1, 1] in the dtype of `like` (the [B, H, T, S] scores)."""
    return values.to(like.dtype).view(1, -1, 1, 1)
