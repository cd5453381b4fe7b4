"""Non-finite guards of the stages that read a trained model (evaluate, quantize, analyze).

A model with a NaN / inf weight (a diverged or corrupted run) still produces numbers: null metrics
or accuracies of an all-NaN forward. `check_finite_model` refuses it when it is loaded;
`check_finite_metrics` refuses a result holding a non-finite or missing metric before it is
written. Both raise NonFiniteError (a ValueError: the CLI exits 2, Snakemake marks the job failed).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator

import torch

MAX_NAMED = 5  # offending parameters / metrics listed in a message


class NonFiniteError(ValueError):
    """A model weight or a metric is NaN / inf (or a metric is missing); the message names it."""


@torch.no_grad()
def check_finite_model(model: torch.nn.Module, source: object) -> None:
    """Raise NonFiniteError naming the parameters / buffers of `model` that hold NaN or inf."""
    bad = []
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and tensor.device.type != "meta":
            n_bad = int((~torch.isfinite(tensor)).sum())
            if n_bad:
                bad.append(f"{name} ({n_bad} of {tensor.numel()} values NaN/inf)")
    if bad:
        more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
        raise NonFiniteError(f"model {source} has non-finite weights: {', '.join(bad[:MAX_NAMED])}{more}; "
                             f"the training run diverged or the file is corrupted: retrain it")


def _leaves(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _leaves(value, f"{path}[{i}]")
    else:
        yield path, node


def check_finite_metrics(metrics: dict, source: object, *, optional: Callable[[str], bool] = lambda path: False) -> None:
    """Raise NonFiniteError naming every number in `metrics` (nested dicts / lists) that is NaN / inf,
    and every None, unless optional(path) says that entry may be missing (e.g. a standard error)."""
    bad = []
    for path, value in _leaves(metrics, ""):
        if optional(path) or isinstance(value, (bool, str)):
            continue
        if value is None:
            bad.append(f"{path} = null")
        elif isinstance(value, (int, float)) or hasattr(value, "__float__"):
            if not math.isfinite(float(value)):
                bad.append(f"{path} = {float(value)}")
    if bad:
        more = f" and {len(bad) - MAX_NAMED} more" if len(bad) > MAX_NAMED else ""
        raise NonFiniteError(f"{source}: non-finite metric(s) {', '.join(bad[:MAX_NAMED])}{more}; nothing written")
