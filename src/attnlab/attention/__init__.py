"""Attention mechanisms behind one contract (`Attention`) and one registry (`build`)."""

from attnlab.attention import (  # noqa: F401  (registers the mechanisms)
    bigbird,
    flash,
    full,
    hard,
    linformer,
    local,
    longformer,
    lsh,
    luong,
    performer,
)
from attnlab.attention.base import Attention, AttentionBias, Capabilities, KVCache
from attnlab.attention.multihead import MultiHeadAttention
from attnlab.attention.registry import available, build, get, options, register

__all__ = [
    "Attention",
    "AttentionBias",
    "Capabilities",
    "KVCache",
    "MultiHeadAttention",
    "available",
    "build",
    "get",
    "options",
    "register",
]
