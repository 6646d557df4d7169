"""`flash`: exact softmax attention through PyTorch's IO-aware fused kernels only.

FlashAttention (Dao et al., 2022) computes softmax attention tile by tile with an online
softmax, so the n x n matrix never leaves fast memory: O(n) extra memory, exact results. This
mechanism pins `scaled_dot_product_attention` to the fused backends (flash, then memory-efficient)
— never the math fallback that materializes the matrix — and records which one ran in
`backend`. Where no fused kernel accepts the inputs it raises, naming the device and dtype.

Differences from `full` (which also calls SDPA): no eager path, so no weights; and the
backend is pinned and reported instead of left to PyTorch's dispatcher.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnlab.attention.base import Capabilities
from attnlab.attention.full import FullAttention
from attnlab.attention.registry import register
from attnlab.errors import CapabilityError

FUSED = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION}


@register("flash")
class FlashAttention(FullAttention):
    """Exact attention through a fused SDPA kernel; `backend` tells which one ran.

    Args:
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training (inside the kernel; the
            CPU kernels have none, so a CPU training step with it is a CapabilityError).
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=True,
                                bias=True, weights=False, exact=True,
                                permutation_equivariant=True, shift_invariant=True)

    def __init__(self, *, scale: float | None = None, dropout: float = 0.0):
        super().__init__(impl="sdpa", scale=scale, dropout=dropout)
        self.backend: str | None = None

    def extra_repr(self) -> str:
        return f"dropout={self.dropout}, backend={self.backend}"

    def sdpa(self, q, k, v, *, attn_mask, is_causal, dropout_p, scale):
        for name, backend in FUSED.items():
            try:
                with sdpa_kernel([backend]):
                    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                         dropout_p=dropout_p,
                                                         is_causal=is_causal, scale=scale)
            except RuntimeError:
                continue
            self.backend = name
            return out
        # PyTorch's CPU flash kernel has no dropout: training with it must say so
        with_dropout = f", attention dropout {dropout_p}" if dropout_p else ""
        raise CapabilityError(f"attention 'flash': no fused SDPA kernel accepts these inputs "
                              f"({q.dtype} on {q.device.type}{with_dropout}); use attention "
                              f"'full'")
