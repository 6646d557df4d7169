"""Reversible residual layers (Gomez et al., 2017; Reformer, Kitaev et al., 2020) and chunked
feed-forward: activation memory that does not grow with depth or with the FFN's width.

A reversible layer keeps two streams and maps (x1, x2) to

    y1 = x1 + F(x2),    y2 = x2 + G(y1)

with F the attention sublayer and G the feed-forward sublayer. Its inputs can be recomputed
from its outputs, x2 = y2 - G(y1) and x1 = y1 - F(x2), so backward needs no stored
activations: `ReversibleSequence` runs all layers as one autograd Function that saves only the
last layer's (y1, y2) and, in backward, rebuilds each layer's inputs while it back-propagates
through it (one layer's graph alive at a time). Dropout inside F and G draws the same masks
in the recomputation as in the forward: each call's RNG state is saved and restored.

Streams (as in the Reformer): the input is duplicated, x1 = x2 = x; at the end the two streams
are averaged, (y1 + y2) / 2, which keeps the width d_model so the sequence is a drop-in for a
stack of pre-norm Blocks. The Reformer concatenates them instead (width 2 * d_model, followed
by its final norm); `merge="concat"` does that.

Exactness: in exact arithmetic the gradients equal those of the plain computation; in floating
point the recomputed inputs differ from the forward's by rounding (the subtraction undoes the
addition only approximately), so gradients agree to about 1e-6 relative in float32 and 1e-12
in float64.

Chunked feed-forward: the FFN is position-wise, so `ChunkedFeedForward` applies it to
`chunk_size` positions at a time and, with `checkpoint=True`, recomputes each chunk's hidden
activation in backward: no (B, T, d_ff) tensor ever exists, in the forward or the backward.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint, get_device_states, set_device_states

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import ConfigError

MERGES = ("mean", "concat")


def _dropout_module(dropout: nn.Module | float | None) -> nn.Module | None:
    """A Block's dropout (a module, or None at p = 0) or a probability -> module or None."""
    if dropout is None or isinstance(dropout, nn.Module):
        return dropout
    return nn.Dropout(dropout) if dropout > 0 else None


class AttentionSublayer(nn.Module):
    """F of a reversible layer: dropout(self_attn(norm(x))), a pre-norm Block's attention branch.

    Args:
        self_attn: a `MultiHeadAttention` (any registered mechanism).
        norm: the norm applied to the branch input.
        dropout: residual dropout on the branch output (a module, its probability, or None).
    """

    def __init__(self, self_attn: MultiHeadAttention, norm: nn.Module,
                 dropout: nn.Module | float | None = None):
        super().__init__()
        self.self_attn, self.norm = self_attn, norm
        self.dropout = _dropout_module(dropout)

    def forward(self, x: Tensor, *, causal: bool = False, key_padding_mask: Tensor | None = None,
                positional=None, positions: Tensor | None = None) -> Tensor:
        """x (B, T, d) -> (B, T, d); the keywords are those of `MultiHeadAttention`."""
        out, _ = self.self_attn(self.norm(x), causal=causal, key_padding_mask=key_padding_mask,
                                positional=positional, positions=positions)
        return out if self.dropout is None else self.dropout(out)


class FeedForwardSublayer(nn.Module):
    """G of a reversible layer: dropout(ffn(norm(x))), a pre-norm Block's feed-forward branch.

    Args:
        ffn: the position-wise network (a `FeedForward`, or a `ChunkedFeedForward` around one).
        norm: the norm applied to the branch input.
        dropout: residual dropout on the branch output (a module, its probability, or None).
    """

    def __init__(self, ffn: nn.Module, norm: nn.Module, dropout: nn.Module | float | None = None):
        super().__init__()
        self.ffn, self.norm = ffn, norm
        self.dropout = _dropout_module(dropout)

    def forward(self, x: Tensor) -> Tensor:
        out = self.ffn(self.norm(x))
        return out if self.dropout is None else self.dropout(out)


class ChunkedFeedForward(nn.Module):
    """A position-wise FFN applied `chunk_size` positions at a time (the Reformer's chunking).

    Args:
        ffn: a position-wise module (B, T, d) -> (B, T, d), e.g. `attnlab.layers.FeedForward`.
        chunk_size: positions per chunk; the largest hidden activation is (B, chunk_size, d_ff).
        checkpoint: recompute each chunk's hidden activation in backward (with the same dropout
            mask) instead of keeping it, so backward too holds one chunk's activation at a time.
            Costs one more FFN forward. Without it, the chunks' activations are kept for
            backward and together are as large as the unchunked one.

    Equal to `ffn(x)` in values and gradients. Under dropout the masks differ from the
    unchunked call's (the same distribution, drawn chunk by chunk).
    """

    def __init__(self, ffn: nn.Module, chunk_size: int, *, checkpoint: bool = True):
        super().__init__()
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ConfigError(f"chunked feed-forward: chunk_size must be an integer >= 1, "
                              f"got {chunk_size!r}")
        self.ffn, self.chunk_size, self.checkpoint = ffn, chunk_size, checkpoint

    def extra_repr(self) -> str:
        return f"chunk_size={self.chunk_size}, checkpoint={self.checkpoint}"

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, d) -> (B, T, d), one (B, chunk_size, d) slice at a time."""
        recompute = self.checkpoint and torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.ffn.parameters()))
        outs = []
        for piece in x.split(self.chunk_size, dim=1):  # (B, <= chunk_size, d) views
            if recompute:
                outs.append(checkpoint(self.ffn, piece, use_reentrant=False))
            else:
                outs.append(self.ffn(piece))
        return torch.cat(outs, dim=1)


def _distinct(params) -> list[nn.Parameter]:
    """Each parameter once: a parameter given twice to autograd.grad would be counted twice."""
    return list({id(p): p for p in params}.values())


class _RngState:
    """The RNG state before one sublayer call, to replay its dropout in the recomputation."""

    def __init__(self, x: Tensor):
        self.cpu = torch.get_rng_state()
        self.devices, self.states = get_device_states(x)  # accelerator states; none on CPU

    @contextmanager
    def replay(self):
        # fork_rng: the replay must not disturb the RNG stream of the rest of backward.
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            set_device_states(self.devices, self.states)
            yield


class _Reversible(torch.autograd.Function):
    """All layers of a `ReversibleSequence` as one Function that saves only its outputs."""

    @staticmethod
    def forward(ctx, x1, x2, seq, f_kwargs, *params):
        ctx.seq, ctx.f_kwargs, ctx.rng = seq, f_kwargs, []
        for f, g in zip(seq.blocks_f, seq.blocks_g, strict=True):  # grad is off in here
            rng_f = _RngState(x2) if seq.training else None
            x1 = x1 + f(x2, **f_kwargs)
            rng_g = _RngState(x1) if seq.training else None
            x2 = x2 + g(x1)
            ctx.rng.append((rng_f, rng_g))
        ctx.save_for_backward(x1, x2)  # (B, T, d) twice, whatever the depth
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        y1, y2 = ctx.saved_tensors
        seq, f_kwargs = ctx.seq, ctx.f_kwargs
        params = seq.trainable(f_kwargs)
        slot = {id(p): i for i, p in enumerate(params)}
        grads: list[Tensor | None] = [None] * len(params)

        def accumulate(ps, gs):
            for p, gr in zip(ps, gs, strict=True):
                if gr is not None:
                    i = slot[id(p)]
                    grads[i] = gr if grads[i] is None else grads[i] + gr

        extra = seq.extra_parameters(f_kwargs)  # e.g. a positional module's, used by F
        for i in reversed(range(len(seq.blocks_f))):
            f, g = seq.blocks_f[i], seq.blocks_g[i]
            rng_f, rng_g = ctx.rng[i]
            # y2 = x2 + G(y1): recompute G(y1) with a graph, back-propagate dy2 through it.
            with torch.enable_grad():
                y1 = y1.detach().requires_grad_()
                with rng_g.replay() if rng_g else nullcontext():
                    gy = g(y1)
                g_params = _distinct(p for p in g.parameters() if p.requires_grad)
                d = torch.autograd.grad(gy, (y1, *g_params), dy2, allow_unused=True)
            accumulate(g_params, d[1:])
            z1 = dy1 if d[0] is None else dy1 + d[0]  # all of dL/dy1 = dL/dx1
            x2 = (y2 - gy).detach()
            del gy, d
            # y1 = x1 + F(x2): recompute F(x2), back-propagate z1 through it.
            with torch.enable_grad():
                x2.requires_grad_()
                with rng_f.replay() if rng_f else nullcontext():
                    fx = f(x2, **f_kwargs)
                f_params = _distinct(p for p in (*f.parameters(), *extra) if p.requires_grad)
                d = torch.autograd.grad(fx, (x2, *f_params), z1, allow_unused=True)
            accumulate(f_params, d[1:])
            dy2 = dy2 if d[0] is None else dy2 + d[0]
            y1, y2, dy1 = (y1 - fx).detach(), x2.detach(), z1
            del fx, d
        return (dy1, dy2, None, None, *grads)


class ReversibleSequence(nn.Module):
    """Reversible residual layers: activation memory flat in depth (Gomez et al.; Reformer).

    Layer i maps (x1, x2) to (x1 + F_i(x2), x2 + G_i(x1 + F_i(x2))). The input is duplicated
    into both streams; the output merges them (see the module doc).

    Args:
        blocks_f: the F of each layer, typically `AttentionSublayer`s. Called as
            `f(x, **f_kwargs)` with the keywords given to `forward`.
        blocks_g: the G of each layer, typically `FeedForwardSublayer`s. Called as `g(x)`.
        merge: "mean" averages the two output streams (width d_model); "concat" concatenates
            them as the Reformer does (width 2 * d_model).

    F and G must be deterministic given the RNG state (dropout is replayed) and must take their
    trainable state from their own parameters (or a module passed in `f_kwargs`, such as a
    positional encoding): backward rebuilds their graphs from those alone.
    """

    def __init__(self, blocks_f, blocks_g, *, merge: str = "mean"):
        super().__init__()
        blocks_f, blocks_g = list(blocks_f), list(blocks_g)
        if not blocks_f or len(blocks_f) != len(blocks_g):
            raise ConfigError(f"reversible layers need as many F as G blocks, at least one; "
                              f"got {len(blocks_f)} and {len(blocks_g)}")
        if merge not in MERGES:
            raise ConfigError(f"reversible merge must be one of {', '.join(MERGES)}, "
                              f"got {merge!r}")
        self.blocks_f, self.blocks_g = nn.ModuleList(blocks_f), nn.ModuleList(blocks_g)
        self.merge = merge

    @classmethod
    def from_blocks(cls, blocks, *, merge: str = "mean", ffn_chunk_size: int | None = None):
        """The reversible counterpart of pre-norm `Block`s, sharing their modules.

        Block i gives F_i = dropout(self_attn(attn_norm(x))) and G_i = dropout(ffn(ffn_norm(x)));
        with `ffn_chunk_size` its FFN runs through a `ChunkedFeedForward`. Post-norm blocks
        (Norm(x + F(x)) cannot be undone by a subtraction) and cross-attention are refused.
        """
        fs, gs = [], []
        for i, block in enumerate(blocks):
            if not block.norm_first or block.cross_attn is not None:
                raise ConfigError(f"block {i} cannot be made reversible: it needs pre-norm "
                                  f"(norm_first) and no cross-attention")
            ffn = (block.ffn if ffn_chunk_size is None
                   else ChunkedFeedForward(block.ffn, ffn_chunk_size))
            fs.append(AttentionSublayer(block.self_attn, block.attn_norm, block.dropout))
            gs.append(FeedForwardSublayer(ffn, block.ffn_norm, block.dropout))
        return cls(fs, gs, merge=merge)

    def extra_repr(self) -> str:
        return f"layers={len(self.blocks_f)}, merge={self.merge}"

    @staticmethod
    def extra_parameters(f_kwargs: dict) -> list[nn.Parameter]:
        """Parameters of modules handed to F through its keywords (a positional encoding)."""
        return [p for v in f_kwargs.values() if isinstance(v, nn.Module) for p in v.parameters()]

    def trainable(self, f_kwargs: dict) -> list[nn.Parameter]:
        """Every distinct parameter the layers use that requires a gradient, in a fixed order."""
        return _distinct(p for p in (*self.parameters(), *self.extra_parameters(f_kwargs))
                         if p.requires_grad)

    def forward(self, x: Tensor, **f_kwargs) -> Tensor:
        """x (B, T, d) -> (B, T, d) ("mean") or (B, T, 2d) ("concat").

        Args:
            x: the input, duplicated into both streams.
            f_kwargs: keywords for every F (for `AttentionSublayer`: causal, key_padding_mask,
                positional, positions). Tensors among them must not require gradients.
        """
        for name, value in f_kwargs.items():
            if isinstance(value, Tensor) and value.requires_grad:
                raise ValueError(f"reversible layers cannot back-propagate into '{name}'")
        params = self.trainable(f_kwargs)
        if torch.is_grad_enabled() and (x.requires_grad or params):
            y1, y2 = _Reversible.apply(x, x, self, f_kwargs, *params)
        else:  # nothing to differentiate: the plain loop is the same computation
            y1, y2 = self.plain(x, **f_kwargs)
        return (y1 + y2) / 2 if self.merge == "mean" else torch.cat([y1, y2], dim=-1)

    def plain(self, x: Tensor, **f_kwargs) -> tuple[Tensor, Tensor]:
        """The same layers with ordinary autograd (stores every activation): (y1, y2)."""
        x1 = x2 = x
        for f, g in zip(self.blocks_f, self.blocks_g, strict=True):
            x1 = x1 + f(x2, **f_kwargs)
            x2 = x2 + g(x1)
        return x1, x2
