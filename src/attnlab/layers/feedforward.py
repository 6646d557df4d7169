"""Position-wise feed-forward networks: the per-token MLP between attention layers.

    ReLU / GELU:  FFN(x) = act(x W1 + b1) W2 + b2        (Vaswani et al.; GPT-2 and BERT use GELU)
    SwiGLU:       FFN(x) = (silu(x W_gate) * x W_up) W_down   (Shazeer, 2020; LLaMA)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.errors import unknown

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's "gelu_new"
    "silu": F.silu,
}
FEEDFORWARD = (*ACTIVATIONS, "swiglu")


class FeedForward(nn.Module):
    """Two-layer MLP with activation `activation`, or a gated SwiGLU.

    Args:
        d_model: input and output width.
        d_ff: hidden width.
        activation: one of relu, gelu, gelu_tanh, silu, swiglu.
        dropout: dropout on the hidden activations while training.
        bias: linear layers have biases.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", dropout: float = 0.0,
                 bias: bool = True):
        super().__init__()
        if activation not in FEEDFORWARD:
            raise unknown("activation", activation, FEEDFORWARD)
        self.activation = activation
        self.gated = activation == "swiglu"
        self.fc1 = nn.Linear(d_model, d_ff, bias=bias)  # the gate for SwiGLU
        self.fc_up = nn.Linear(d_model, d_ff, bias=bias) if self.gated else None
        self.fc2 = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None  # None: no call (see Block)

    def extra_repr(self) -> str:
        return f"activation={self.activation}"

    def forward(self, x: Tensor) -> Tensor:
        if self.gated:
            h = F.silu(self.fc1(x)) * self.fc_up(x)
        else:
            h = ACTIVATIONS[self.activation](self.fc1(x))
        if self.dropout is not None:
            h = self.dropout(h)
        return self.fc2(h)
