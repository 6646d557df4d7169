"""Positional encodings: none, sinusoidal, learned absolute, rotary (RoPE), ALiBi.

Attention alone is blind to order. An encoding enters the model at one of three places, and
every class here has all three hooks so a model calls them without knowing which it holds:

- `embed(x, start, positions)`: absolute encodings are added to the embeddings (B, T, d).
- `rotate(x, start, positions)`: rotary encodings turn queries and keys (B, H, T, Dh).
- `attention_bias`: relative encodings add a position-dependent bias to the scores.

Positions are `start, start + 1, ...` (`start` is the KV cache's `seen` count while decoding),
unless explicit `positions` (T,) or (B, T) are given: batched prompts with left padding give
each row its own positions so that it computes exactly what it would alone.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from attnlab.errors import AttnlabError, ConfigError, unknown


def token_positions(n: int, start: int = 0, positions: Tensor | None = None,
                    device=None) -> Tensor:
    """Explicit `positions` if given, else `start .. start + n - 1`."""
    if positions is not None:
        if positions.numel() and int(positions.min()) < 0:
            raise AttnlabError(f"token positions must be >= 0, got {int(positions.min())}")
        return positions
    return torch.arange(start, start + n, device=device)


class PositionalEncoding(nn.Module):
    """No-op hooks; subclasses override the one they use."""

    name = "none"
    attention_bias = None

    def embed(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        return x

    def rotate(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        return x


class NoPositional(PositionalEncoding):
    """No position information: the model is a set function (permutation equivariant)."""


def angle_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision positional angles are computed in: float64 for a float64 model (whose
    float32 angles would be off by ~1e-4 at position 20,000), else float32 (as other
    implementations do, which keeps pretrained models' outputs equal to theirs)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def sinusoid_table(positions: Tensor, dim: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """(T, dim) table: PE[p, 2i] = sin(p / 10000^(2i/dim)), PE[p, 2i+1] = cos(same), computed
    in `dtype`."""
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=dtype) * (-math.log(1e4) / dim))
    angles = positions.to(dtype)[:, None] * inv_freq[None, :]  # (T, ceil(dim/2))
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)  # interleave sin, cos
    return table[:, :dim]


class SinusoidalPositional(PositionalEncoding):
    """Fixed sinusoids of Vaswani et al. (2017), added to the embeddings; no length limit."""

    name = "sinusoidal"

    def __init__(self, d_model: int):
        super().__init__()
        self.d_model = d_model

    def embed(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        pos = token_positions(x.shape[1], start, positions, x.device)  # (T,) or (B, T)
        table = sinusoid_table(pos.flatten(), self.d_model, angle_dtype(x.dtype))
        table = table.view(*pos.shape, self.d_model)
        return x + table.to(device=x.device, dtype=x.dtype)


class LearnedPositional(PositionalEncoding):
    """A learned vector per absolute position (GPT-2, BERT), up to `max_len` positions."""

    name = "learned"

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.max_len = max_len
        self.weight = nn.Parameter(torch.zeros(max_len, d_model))
        nn.init.normal_(self.weight, std=0.02)

    def embed(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        if positions is None:  # consecutive: a slice of the table, no index tensor to build
            pos = slice(start, start + x.shape[1])
            end = pos.stop
        else:
            pos = token_positions(x.shape[1], start, positions, x.device)
            end = int(pos.max()) + 1 if pos.numel() else 0
        if end > self.max_len:
            raise AttnlabError(
                f"sequence reaches position {end} but the learned positional encoding has "
                f"max_len {self.max_len}; shorten the input or raise model.max_len"
            )
        return x + self.weight[pos]


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


class RotaryPositional(PositionalEncoding):
    """RoPE (Su et al., 2021): rotate each pair of query/key features by position * frequency.

    The dot product of a rotated query and key then depends only on their distance. Pairs are
    (i, i + Dh/2), the "rotate half" layout of GPT-NeoX and LLaMA in Hugging Face format, not
    the paper's adjacent pairs (2i, 2i+1); the two are a fixed permutation of the features.
    """

    name = "rope"

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        if head_dim % 2:
            raise ConfigError(f"RoPE needs an even head dimension, got {head_dim}")
        if not theta > 0:
            raise ConfigError(f"rope_theta must be > 0, got {theta}")
        self.head_dim, self.theta = head_dim, theta
        self._cos = self._sin = None

    def _tables(self, end: int, device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin of the angles of positions [0, n >= end), computed in `dtype` (see
        `angle_dtype`) and kept until a longer, other-device or other-precision call."""
        if (self._cos is None or self._cos.shape[0] < end or self._cos.device != device
                or self._cos.dtype != dtype):
            n = max(end, 2 * (0 if self._cos is None else self._cos.shape[0]), 256)
            inv_freq = 1.0 / self.theta ** (
                torch.arange(0, self.head_dim, 2, device=device, dtype=dtype) / self.head_dim)
            freqs = torch.outer(torch.arange(n, device=device, dtype=dtype), inv_freq)
            emb = torch.cat([freqs, freqs], dim=-1)  # (n, Dh)
            self._cos, self._sin = emb.cos(), emb.sin()
        return self._cos, self._sin

    def rotate(self, x: Tensor, start: int = 0, positions: Tensor | None = None) -> Tensor:
        pos = token_positions(x.shape[-2], start, positions, x.device)  # (T,) or (B, T)
        cos, sin = self._tables(int(pos.max()) + 1 if pos.numel() else 1, x.device,
                                angle_dtype(x.dtype))
        cos, sin = cos[pos].to(x.dtype), sin[pos].to(x.dtype)  # (T, Dh) or (B, T, Dh)
        if pos.dim() == 2:  # per-row positions broadcast over the heads of (B, H, T, Dh)
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        return x * cos + rotate_half(x) * sin


def alibi_slopes(n_heads: int) -> Tensor:
    """Head slopes of ALiBi: 2^(-8/n), 2^(-16/n), ... for n a power of two; otherwise those of
    the nearest smaller power of two followed by every other slope of the next one (the paper's
    recipe)."""

    def geometric(n: int) -> list[float]:
        first = 2.0 ** (-8.0 / n)
        return [first ** (i + 1) for i in range(n)]

    p = 2 ** math.floor(math.log2(n_heads))
    slopes = geometric(p)
    if p < n_heads:
        slopes += geometric(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBiPositional(PositionalEncoding):
    """ALiBi (Press et al., 2022): no embedding; scores get -slope_h * distance per head.

    Departure: the paper defines it for causal LMs; for bidirectional attention the distance is
    taken as |i - j|, a symmetric penalty.
    """

    name = "alibi"

    def __init__(self, n_heads: int):
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)

    def attention_bias(self, q_idx: Tensor, k_idx: Tensor) -> Tensor:
        dist = (q_idx.unsqueeze(-1) - k_idx.unsqueeze(-2)).abs()  # (..., Tq, Tk)
        slopes = self.slopes.view(-1, *([1] * dist.dim()))  # (H, 1, ..., 1)
        return -slopes * dist  # (H, ..., Tq, Tk)


POSITIONAL = ("none", "sinusoidal", "learned", "rope", "alibi")


def build_positional(
    name: str,
    *,
    d_model: int,
    n_heads: int,
    max_len: int,
    rope_theta: float = 10000.0,
) -> PositionalEncoding:
    """The positional encoding called `name`, sized for a model.

    Args:
        name: none, sinusoidal, learned, rope or alibi.
        d_model: model width (sinusoidal, learned).
        n_heads: heads (rope rotates d_model / n_heads per head; alibi has a slope per head).
        max_len: positions a learned table holds.
        rope_theta: RoPE's base frequency.
    """
    if name == "none":
        return NoPositional()
    if name == "sinusoidal":
        return SinusoidalPositional(d_model)
    if name == "learned":
        return LearnedPositional(d_model, max_len)
    if name == "rope":
        return RotaryPositional(d_model // n_heads, rope_theta)
    if name == "alibi":
        return ALiBiPositional(n_heads)
    raise unknown("positional encoding", name, POSITIONAL)
