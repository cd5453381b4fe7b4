"""Loading an exported model directory, the one way every stage does it, and the device it runs on.

load_model checks every file of the directory against its manifest.json first (softpick.hf_export.
verify_model_dir: a ModelIntegrityError names each missing, truncated or changed file), loads it with
this package's classes, refuses NaN / inf weights (softpick.finite: a NonFiniteError naming the
directory or weights file) and returns it on the device in eval mode.
"""
from __future__ import annotations

from pathlib import Path

import torch


def resolve_device(name: str) -> torch.device:
    """Config 'device' -> torch.device: 'auto' is CUDA when torch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("config asks for device 'cuda' but torch sees no CUDA device; set device: cpu or auto")
    return torch.device(name)


def load_model(model_dir: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               weights: str | Path | None = None, verify: bool = True):
    """The model of model_dir (files checked against its manifest unless verify is false), on device, eval mode.

    weights: a safetensors file to load instead of the directory's own (a training snapshot), into the
    model model_dir/config.json describes."""
    from transformers import AutoModelForCausalLM

    from .finite import check_finite_model
    from .hf_export import verify_model_dir
    from .model import SoftpickConfig, SoftpickForCausalLM  # also registers the Auto classes

    model_dir = Path(model_dir)
    if verify:
        verify_model_dir(model_dir)
    if weights is None:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    else:
        from safetensors.torch import load_file

        model = SoftpickForCausalLM(SoftpickConfig.from_pretrained(model_dir)).to(dtype)
        model.load_state_dict(load_file(str(weights)))
    check_finite_model(model, model_dir if weights is None else weights)  # a NaN model still gives numbers
    return model.to(device).eval()


def load_model_and_tokenizer(model_dir: str | Path, device: str | torch.device = "cpu"):
    """(model, tokenizer) of an exported model dir (the tokenizer saved beside it), float32, eval mode."""
    from transformers import AutoTokenizer

    model = load_model(model_dir, device=device)
    return model, AutoTokenizer.from_pretrained(str(model_dir))
