"""Normalization layers: LayerNorm (Ba et al., 2016) and RMSNorm (Zhang & Sennrich, 2019).

Both are PyTorch's own modules; this file only names them so configs can choose.
"""

from __future__ import annotations

from torch import nn

from attnlab.errors import unknown

NORMS = ("layernorm", "rmsnorm")


def build_norm(name: str, dim: int, eps: float = 1e-5, bias: bool = True) -> nn.Module:
    """`layernorm` (scale and, with `bias`, shift) or `rmsnorm` (scale only, no centering).

    Args:
        name: "layernorm" or "rmsnorm".
        dim: the normalized (last) dimension.
        eps: added to the variance (mean square) before the square root.
        bias: layernorm's shift; rmsnorm has none.
    """
    if name == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if name == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    raise unknown("norm", name, NORMS)
