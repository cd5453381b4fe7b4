"""The registry of attention kinds: one module per kind, each exporting KIND (an AttentionKind)."""
from __future__ import annotations

from . import gated, learned_sink, rectified_softmax, relu_softmax, scaled_softpick, softmax, softmax_plus_one, softpick
from .base import AttentionKind, KindParameters

REGISTRY: dict[str, AttentionKind] = {
    m.KIND.name: m.KIND
    for m in (softmax, softpick, scaled_softpick, rectified_softmax, relu_softmax, softmax_plus_one, gated, learned_sink)
}
KINDS: tuple[str, ...] = tuple(REGISTRY)


def get_kind(name: str) -> AttentionKind:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown attention kind {name!r}; expected one of {KINDS}") from None


__all__ = ["REGISTRY", "KINDS", "get_kind", "AttentionKind", "KindParameters"]
