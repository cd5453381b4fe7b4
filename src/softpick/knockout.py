"""Are a model's first-token heads sinks (no-ops) or do they work? A knockout on validation windows.

For each length n of knockout.lengths (null = analysis.max_len) on knockout.num_windows validation
windows of n tokens (train.bos_first: BOS first, as in training):

1. the sink heads: (layer, head) pairs whose attention weight on key 0, averaged over the queries
   and the windows, exceeds knockout.eps (Gu et al.'s sink score, softpick.analysis.sink_scores, per head);
2. the knockout: the validation loss with the weight of key 0 set to 0 in exactly those heads
   (nothing renormalised: out_h,t loses a_h,t,0 * v_h,0), minus the loss of the intact model;
3. the control: the same knockout in as many heads drawn at random from the other heads,
   knockout.random_draws times.

A head that only parks attention on the first token (a sink: v_0 small, its output a no-op) costs
nothing when knocked out; a head that reads the first token costs loss. The knockout is applied to
the attention module's output: out - o_proj(finish(a_:,:,0 * v_0)), exact for every kind whose
finish() is linear in the attention output (all of softpick.attention.kinds: identity or a gate).
Output: results/<run>/knockout/<variant>.json.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from .analysis import sink_scores
from .atomic import write_json_atomic
from .attention import get_kind
from .finite import check_finite_metrics

DEFAULT_KNOCKOUT: dict = {
    "lengths": [64, None],  # window lengths; null = analysis.max_len
    "num_windows": 64,
    "batch_size": 16,
    "eps": 0.3,             # a head whose mean weight on key 0 exceeds eps is a sink head
    "random_draws": 5,
    "seed": 0,
}


def _windows(val_tokens: np.ndarray, length: int, count: int, bos_id: int | None) -> torch.Tensor:
    from .windows import gather_windows

    n = (len(val_tokens) - 1) // length
    if n == 0:
        raise ValueError(f"the validation split ({len(val_tokens)} tokens) is shorter than one window of {length + 1}")
    starts = np.linspace(0, n - 1, num=min(n, count)).astype(np.int64) * length
    return gather_windows(val_tokens, starts, length, bos_id)


def _attention_modules(model) -> list:
    return [layer.self_attn for layer in model.model.layers]


@contextlib.contextmanager
def first_token_knockout(model, heads: list[tuple[int, int]]):
    """While active, the weight of key 0 is zeroed in `heads` ((layer, head) pairs) of a forward run
    with output_attentions=True (the materialised path, which returns the weights the hook reads)."""
    modules = _attention_modules(model)
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(int(layer), []).append(int(head))
    v0: dict[int, torch.Tensor] = {}
    handles = []
    for layer, heads_here in by_layer.items():
        attn = modules[layer]

        def keep_v0(_mod, _args, out, layer=layer, attn=attn):
            v0[layer] = out[:, 0].view(out.shape[0], attn.n_kv, attn.head_dim)  # [B, Hkv, D], before any RoPE

        def knock(mod, args, output, layer=layer, heads_here=heads_here):
            out, weights = output
            if weights is None:
                raise RuntimeError("the knockout needs attention weights: call the model with output_attentions=True")
            B, H, T, _ = weights.shape
            group = H // mod.n_kv
            delta = torch.zeros(B, T, H, mod.head_dim, dtype=out.dtype, device=out.device)
            for h in heads_here:
                delta[:, :, h] = weights[:, h, :, 0, None].to(out.dtype) * v0[layer][:, None, h // group].to(out.dtype)
            delta = get_kind(mod.config.attention_kind).finish(delta, mod.kind_params, args[0])
            return out - mod.o_proj(delta.reshape(B, T, -1)), weights

        handles.append(attn.v_proj.register_forward_hook(keep_v0))
        handles.append(attn.register_forward_hook(knock))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _loss_and_first_weight(model, windows: torch.Tensor, batch_size: int, device) -> tuple[float, np.ndarray]:
    """Mean next-token loss over the windows and the mean weight on key 0 per (layer, head) [L, H]."""
    losses, first = [], None
    for i in range(0, len(windows), batch_size):
        x = windows[i:i + batch_size].to(device)
        out = model(x[:, :-1], targets=x[:, 1:], output_attentions=True)
        losses.append(float(out.loss) * len(x))
        w0 = torch.stack([sink_scores(a).sum(dim=0) for a in out.attentions])  # [L, H] summed over the windows
        first = w0 if first is None else first + w0
    return sum(losses) / len(windows), (first / len(windows)).cpu().numpy()


def knockout_model(model, val_tokens: np.ndarray, cfg: dict, max_len: int, bos_id: int | None, device="cpu") -> list[dict]:
    """The knockout at every length of cfg["lengths"] (see the module docstring); one record per length."""
    c = {**DEFAULT_KNOCKOUT, **(cfg or {})}
    model.eval()
    conf = model.config
    old_backend, conf.attention_backend = conf.attention_backend, "torch"
    rng = np.random.default_rng(int(c["seed"]))
    records = []
    try:
        for length in c["lengths"]:
            length = int(max_len if length is None else min(int(length), max_len))
            windows = _windows(val_tokens, length, int(c["num_windows"]), bos_id)
            base, first = _loss_and_first_weight(model, windows, int(c["batch_size"]), device)
            L, H = first.shape
            sink = [(int(l), int(h)) for l, h in zip(*np.nonzero(first > float(c["eps"])))]
            record = {"length": length, "num_windows": len(windows), "num_heads_total": L * H, "base_loss": base,
                      "first_token_weight": first.tolist(),
                      "sink_heads": [[l, h, float(first[l, h])] for l, h in sink]}
            if sink:
                with first_token_knockout(model, sink):
                    record["sink_knockout_loss"], _ = _loss_and_first_weight(model, windows, int(c["batch_size"]), device)
                record["sink_knockout_delta"] = record["sink_knockout_loss"] - base
                sink_set = set(sink)
                others = [(l, h) for l in range(L) for h in range(H) if (l, h) not in sink_set]
                pool = others if len(others) >= len(sink) else [(l, h) for l in range(L) for h in range(H)]
                draws = []
                for _ in range(int(c["random_draws"])):
                    pick = [pool[i] for i in rng.choice(len(pool), size=len(sink), replace=False)]
                    with first_token_knockout(model, pick):
                        loss, _ = _loss_and_first_weight(model, windows, int(c["batch_size"]), device)
                    draws.append({"heads": [list(p) for p in pick], "delta": loss - base})
                record["random_knockout"] = draws
                deltas = [d["delta"] for d in draws]
                record["random_knockout_delta"] = {"mean": float(np.mean(deltas)), "min": float(np.min(deltas)),
                                                   "max": float(np.max(deltas))}
            records.append(record)
    finally:
        conf.attention_backend = old_backend
    return records


def run_knockout(model_dir: str | Path, data_dir: str | Path, config: dict, out_json: str | Path, device="cpu") -> dict:
    """Load the trained model and the validation tokens, run the knockout, write out_json atomically."""
    from transformers import AutoTokenizer

    from .data import load_tokens
    from .loading import load_model
    from .windows import window_bos_id

    model_dir, data_dir = Path(model_dir), Path(data_dir)
    model = load_model(model_dir, device=device)  # files checked against the manifest; finite
    val_tokens, _ = load_tokens(data_dir, "val")
    bos_id = window_bos_id(config["train"], AutoTokenizer.from_pretrained(data_dir / "tokenizer"))
    cfg = {**DEFAULT_KNOCKOUT, **(config.get("knockout") or {})}
    records = knockout_model(model, val_tokens, cfg, int(config["analysis"]["max_len"]), bos_id, device)
    out = {"variant": model_dir.name, "attention_kind": model.config.attention_kind, "model_dir": str(model_dir),
           "config": cfg, "lengths": records}
    check_finite_metrics(out, out_json, optional=lambda path: path.split(".")[0] == "config")
    write_json_atomic(out_json, out)
    return out
