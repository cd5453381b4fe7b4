"""The weights of an fla `transformer` checkpoint: reading its files, renaming its tensors to this model's.

weight_files finds model.safetensors (single or sharded by an index), else pytorch_model*.bin;
load_state_dict reads them on CPU; convert_state_dict maps fla's tensor names onto
SoftpickForCausalLM's, accounting for every tensor (derived ones are checked, unknown ones refused).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from .fla_config import CheckpointFormatError

log = logging.getLogger("softpick.importer")  # one logger for the whole import

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def weight_files(ckpt_dir: Path, required: bool = True) -> list[Path]:
    """The weight files of a checkpoint: safetensors (single or sharded) first, else pytorch_model*.bin."""
    ckpt_dir = Path(ckpt_dir)
    for single, index in (("model.safetensors", "model.safetensors.index.json"),
                          ("pytorch_model.bin", "pytorch_model.bin.index.json")):
        if (ckpt_dir / single).is_file():
            return [ckpt_dir / single]
        if (ckpt_dir / index).is_file():
            shards = sorted(set(json.loads((ckpt_dir / index).read_text())["weight_map"].values()))
            missing = [s for s in shards if not (ckpt_dir / s).is_file()]
            if missing and required:
                raise FileNotFoundError(f"{ckpt_dir / index} lists shards that are missing: {', '.join(missing)}")
            return [ckpt_dir / s for s in shards]
    if required:
        raise FileNotFoundError(f"{ckpt_dir}: no model weights ({' / '.join(WEIGHT_FILES)})")
    return []


def load_state_dict(ckpt_dir: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in weight_files(ckpt_dir):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            out.update(load_file(str(path)))
        else:
            out.update(torch.load(path, map_location="cpu", weights_only=True))
    return out


_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_LAYER_NAMES = {  # fla name inside a block -> ours
    "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
    **{f"attn.{p}_proj.weight": f"self_attn.{p}_proj.weight" for p in "qkvo"},
    **{f"mlp.{p}_proj.weight": f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")},
    "attn.s": "self_attn.kind_params.length_scale",  # scaled softpick: s_h, [H, 1] in fla
}
_TOP_NAMES = {"model.embeddings.weight": "model.embed_tokens.weight", "model.norm.weight": "model.norm.weight",
              "lm_head.weight": "lm_head.weight"}


def convert_state_dict(fla_sd: dict[str, torch.Tensor], config, where: str = "checkpoint",
                       tied: bool = False) -> dict[str, torch.Tensor]:
    """fla tensor names -> SoftpickForCausalLM's. Every tensor is used or explained: rotary inv_freq and the
    scaled kinds' logn table (checked against log(n + 2)) are derived; anything else unknown is refused.
    tied (fla's tie_word_embeddings): without lm_head.weight the head is a copy of the embedding."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for name, tensor in fla_sd.items():
        m = _LAYER.match(name)
        if name in _TOP_NAMES:
            out[_TOP_NAMES[name]] = tensor
        elif m and m.group(2) in _LAYER_NAMES:
            if m.group(2) == "attn.s":
                if config.attention_kind != "scaled_softpick":
                    unknown.append(name)
                    continue
                tensor = tensor.reshape(-1)
            out[f"model.layers.{m.group(1)}.{_LAYER_NAMES[m.group(2)]}"] = tensor
        elif m and m.group(2) == "attn.logn":
            expected = torch.log(torch.arange(2, tensor.shape[0] + 2, dtype=torch.float64))
            if not torch.allclose(tensor.reshape(-1).double(), expected, rtol=1e-3, atol=1e-3):
                raise CheckpointFormatError(f"{where}: {name} is not log(n + 2), the length factor our scaled softpick computes")
        elif m and m.group(2).endswith("rotary.inv_freq"):
            continue  # recomputed from rope_theta
        else:
            unknown.append(name)
    if unknown:
        raise CheckpointFormatError(f"{where}: tensors with no place in the model here: {', '.join(sorted(unknown)[:12])}"
                                    + (f" (and {len(unknown) - 12} more)" if len(unknown) > 12 else ""))
    if "lm_head.weight" not in out and "model.embed_tokens.weight" in out:
        if not tied:
            raise CheckpointFormatError(f"{where}: lm_head.weight is missing and tie_word_embeddings is false")
        log.info("%s: tie_word_embeddings: lm_head gets a copy of the embedding (our model is untied)", where)
        out["lm_head.weight"] = out["model.embed_tokens.weight"].clone()
    return out
