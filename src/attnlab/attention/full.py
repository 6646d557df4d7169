"""`full`: soft, global, scaled dot-product attention (Vaswani et al., 2017).

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + bias) V

Two paths that tests hold equal: PyTorch's fused `scaled_dot_product_attention` (flash kernel on
CPU: O(n) extra memory, O(n^2) time), and an eager reference twin that materializes the
(B, H, Tq, Tk) weights. `need_weights=True` (or `impl="eager"`) is the explicit switch to the
eager path, the only one that can return weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.attention.base import Attention, Capabilities
from attnlab.attention.masks import dense_keep_mask, masked_softmax, query_positions
from attnlab.attention.registry import register
from attnlab.errors import unknown


def eager_attention(q, k, v, *, scale, keep, bias_tensor=None, dropout=0.0, training=False):
    """The textbook computation: scores, mask, softmax, weighted sum. Returns (out, weights)."""
    scores = (q @ k.transpose(-2, -1)) * scale  # (B, H, Tq, Tk)
    if bias_tensor is not None:
        scores = scores + bias_tensor
    weights = masked_softmax(scores, keep)
    dropped = F.dropout(weights, p=dropout, training=training) if dropout else weights
    return dropped @ v, weights  # (B, H, Tq, Dh), (B, H, Tq, Tk)


@register("full")
class FullAttention(Attention):
    """Softmax attention over every allowed key.

    Args:
        impl: "sdpa" (fused kernel) or "eager" (reference twin, materializes the weights).
        scale: softmax temperature; default 1 / sqrt(head_dim).
        dropout: dropout on the attention weights while training.
    """

    capabilities = Capabilities(causal=True, padding_mask=True, cross=True, kv_cache=True,
                                bias=True, weights=True, exact=True,
                                permutation_equivariant=True, shift_invariant=True)

    def __init__(self, *, impl: str = "sdpa", scale: float | None = None, dropout: float = 0.0):
        super().__init__(scale=scale, dropout=dropout)
        if impl not in ("sdpa", "eager"):
            raise unknown("attention 'full' impl", impl, ("sdpa", "eager"))
        self.impl = impl

    def extra_repr(self) -> str:
        return f"impl={self.impl}, dropout={self.dropout}"

    def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
        Tq, Tk = q.shape[2], k.shape[2]
        scale = self.softmax_scale(q.shape[-1])
        if causal and Tq == 1:  # one query at the last position sees every key: no mask needed
            causal = False
        keep = dense_keep_mask(Tq, Tk, causal=causal, key_padding_mask=key_padding_mask,
                               device=q.device)
        bias_tensor = None
        if bias is not None:
            bias_tensor = bias(query_positions(Tq, Tk, q.device), torch.arange(Tk, device=q.device))
        if need_weights or self.impl == "eager":
            return eager_attention(q, k, v, scale=scale, keep=keep, bias_tensor=bias_tensor,
                                   dropout=self.dropout, training=self.training)
        return self._sdpa(q, k, v, causal, key_padding_mask, keep, bias_tensor, scale), None

    def _sdpa(self, q, k, v, causal, key_padding_mask, keep, bias_tensor, scale) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        if bias_tensor is None and key_padding_mask is None and q.shape[2] == k.shape[2]:
            # No mask tensor at all: the kernel's own causal tiling skips the masked half.
            return self.sdpa(q, k, v, attn_mask=None, is_causal=causal, dropout_p=dropout,
                             scale=scale)
        mask = keep
        if bias_tensor is not None:
            mask = bias_tensor.to(q.dtype)
            while mask.dim() < 4:  # fused kernels take (B | 1, H | 1, Tq, Tk) masks only
                mask = mask.unsqueeze(0)
            if keep is not None:
                mask = mask.masked_fill(~keep, float("-inf"))
        # Rows with no key give zeros in the fused kernel (tested); no NaN reaches the output.
        return self.sdpa(q, k, v, attn_mask=mask, is_causal=False, dropout_p=dropout,
                         scale=scale)

    def sdpa(self, q, k, v, *, attn_mask, is_causal, dropout_p, scale):
        """PyTorch's fused attention; its dispatcher picks the kernel."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p,
                                              is_causal=is_causal, scale=scale)
