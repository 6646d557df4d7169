"""Record the attention of any attnlab model during a forward pass, per layer and per head.

    with capture_attention(model) as cap:
        model(idx)
    cap.records[0].weights  # (B, H, Tq, Tk) of the first attention layer

How: forward hooks on every `MultiHeadAttention` and on the mechanism inside it, registered on
entering the context and removed on leaving it, so model code is untouched and a model outside
the context pays nothing. The mechanism hook sees exactly the q, k, v (after projections, rotary
positions and the KV cache), masks and bias the mechanism was called with, and recomputes what
the mechanism attends to through its *weights path*, under `no_grad`, in eval mode (no dropout)
and with the random state restored, so the forward pass's own output is unchanged.

What `weights` means depends on the mechanism (see `REPORTS`, and docs/tutorial/heads.md):

- full, flash: softmax(q k^T * scale + bias) over the allowed keys (flash has no weights path
  of its own; it is exact, so the eager softmax twin of `full` is its attention).
- hard: the top-k selection weights; zero off the chosen keys. Captured in evaluation mode,
  like every report, so a `gumbel` model in training mode is shown without its noise (the
  selection evaluation makes), not the noisy one its training forward drew.
- local, longformer, bigbird: the softmax over the keys the mechanism scores, scattered to
  token positions; zero outside the window / global tokens / blocks. `pattern` is the layout
  computed independently from the mechanism's options (window band; band + global rows and
  columns; BigBird's global, window and random blocks per head).
- performer: the normalized FAVOR+ kernel weights phi(q) phi(k)^T / row sum, the approximate
  softmax the output is made of; dense over the allowed keys.
- lsh: the Reformer's attention mapped back from sorted buckets to positions (the dense
  matrix `LSHAttention.attention_weights` returns: each round's softmax weighted by the round
  weight); `pattern` is where a query met a key in some round; `extra["buckets"]` holds
  each position's bucket per round (B, H, n_hashes, T). Rows of a query that met no key are 0.
- linformer: attention is over k *projected* keys, `extra["projected"]` (B, H, Tq, k), with
  the projections `extra["proj_k"]` E and `extra["proj_v"]` F (k, Tk) or (H, k, Tk). Mapped
  back to positions, `weights` is W F: the exact coefficient of each value position in the
  output (out = (W F) v). It is signed and its rows need not sum to 1.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.attention.base import Attention
from attnlab.attention.full import eager_attention
from attnlab.attention.masks import dense_keep_mask, keep_mask, masked_softmax, query_positions
from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import CapabilityError


@dataclass
class AttentionRecord:
    """What one attention layer attended to in one call.

    Args:
        name: the `MultiHeadAttention`'s module path, e.g. "stack.blocks.0.self_attn".
        kind: "self" or "cross" (queries from the decoder, keys from the encoder's memory).
        mechanism: the registered mechanism name.
        weights: (B, H, Tq, Tk) float32 on CPU, over token positions (see the module doc).
        pattern: (B or 1, H or 1, Tq, Tk) bool: where the mechanism can attend (its layout,
            causal and padding masks included).
        note: one line saying what `weights` are for this mechanism.
        extra: mechanism-specific tensors (linformer's projected weights, lsh's buckets).
    """

    name: str
    kind: str
    mechanism: str
    weights: Tensor
    pattern: Tensor
    note: str
    extra: dict[str, Tensor] = field(default_factory=dict)

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]


@dataclass
class Call:
    """The mechanism's inputs of one call, as the hook received them."""

    q: Tensor
    k: Tensor
    v: Tensor
    causal: bool
    key_padding_mask: Tensor | None
    bias: Callable | None


def _allowed(call: Call) -> Tensor:
    """(B or 1, 1, Tq, Tk) keys a dense mechanism may attend: causal and padding masks."""
    Tq, Tk = call.q.shape[2], call.k.shape[2]
    keep = dense_keep_mask(Tq, Tk, causal=call.causal, key_padding_mask=call.key_padding_mask,
                           device=call.q.device)
    return torch.ones(1, 1, Tq, Tk, dtype=torch.bool) if keep is None else keep


def _weights_path(mech: Attention, call: Call) -> Tensor:
    _, weights = mech.attend(call.q, call.k, call.v, causal=call.causal,
                             key_padding_mask=call.key_padding_mask, bias=call.bias,
                             need_weights=True)
    return weights


def _dense(mech, call, note):
    return _weights_path(mech, call), _allowed(call), note, {}


def _flash(mech, call):
    Tq, Tk = call.q.shape[2], call.k.shape[2]
    keep = dense_keep_mask(Tq, Tk, causal=call.causal, key_padding_mask=call.key_padding_mask,
                           device=call.q.device)
    bias_tensor = None
    if call.bias is not None:
        bias_tensor = call.bias(query_positions(Tq, Tk, call.q.device),
                                torch.arange(Tk, device=call.q.device))
    _, weights = eager_attention(call.q, call.k, call.v, scale=mech.softmax_scale(
        call.q.shape[-1]), keep=keep, bias_tensor=bias_tensor)
    return weights, _allowed(call), "softmax(q k^T / sqrt(d)) (exact; eager twin)", {}


def _hard(mech, call):
    weights = _weights_path(mech, call)
    return weights, weights > 0, f"hard attention: the {mech.k} selected key(s) per query", {}


def _local(mech, call):
    Tq, Tk = call.q.shape[2], call.k.shape[2]
    w = min(mech.window, Tk)
    pattern = dense_keep_mask(Tq, Tk, causal=call.causal, window=w,
                              key_padding_mask=call.key_padding_mask, device=call.q.device)
    note = f"softmax over the window of {w} keys ({'causal' if call.causal else 'both sides'})"
    return _weights_path(mech, call), pattern, note, {}


def _longformer(mech, call):
    Tq, Tk = call.q.shape[2], call.k.shape[2]
    w, g = min(mech.window, Tk), min(mech.global_tokens, Tk)
    q_idx, k_idx = query_positions(Tq, Tk, call.q.device), torch.arange(Tk, device=call.q.device)
    band = keep_mask(q_idx, k_idx, causal=call.causal, window=w)[0, 0]  # (Tq, Tk)
    glob = (k_idx < g)[None, :] | (q_idx < g)[:, None]
    if call.causal:
        glob &= q_idx[:, None] >= k_idx[None, :]
    pattern = (band | glob)[None, None]
    if call.key_padding_mask is not None:
        pattern = pattern & call.key_padding_mask[:, None, None, :]
    note = f"softmax over a window of {w} keys plus {g} global token(s)"
    return _weights_path(mech, call), pattern, note, {}


def bigbird_pattern(mech, n: int, n_heads: int, causal: bool,
                    key_padding_mask: Tensor | None = None) -> Tensor:
    """(B or 1, H, n, n) bool: BigBird's block layout at token level, built from its options
    (global blocks, window blocks, per-head random blocks: per row when they depend on the
    row's length), causal and padding included."""
    b = mech.block_size
    nb = -(-n // b)
    g, _ = mech._shape(nb)
    mask = None if key_padding_mask is None else key_padding_mask.cpu()
    idx, valid = mech.row_patterns(n, n_heads, causal, mask)  # (B or 1, H, nb - g, K)
    blocks = torch.zeros(idx.shape[0], n_heads, nb, nb, dtype=torch.bool)  # (B, H, q, k)
    blocks[:, :, :g, :] = True  # global query blocks see every key block
    blocks[:, :, :, :g] = True  # every query block sees the global key blocks
    if nb > g:
        rows = torch.arange(idx.shape[0])[:, None, None, None].expand_as(idx)
        heads = torch.arange(n_heads)[None, :, None, None].expand_as(idx)
        qblocks = torch.arange(g, nb)[None, None, :, None].expand_as(idx)
        blocks[rows[valid], heads[valid], qblocks[valid], idx[valid]] = True
    tok = blocks.repeat_interleave(b, 2).repeat_interleave(b, 3)[..., :n, :n]  # (B, H, n, n)
    if causal:
        tok = tok & torch.ones(n, n, dtype=torch.bool).tril()
    if key_padding_mask is not None:
        tok = tok & key_padding_mask.cpu()[:, None, None, :]
    return tok


def _bigbird(mech, call):
    n, H = call.q.shape[2], call.q.shape[1]
    pattern = bigbird_pattern(mech, n, H, call.causal, call.key_padding_mask)
    note = (f"softmax over BigBird blocks of {mech.block_size}: {mech.num_global_blocks} global,"
            f" {mech.window_blocks} window, {mech.num_random_blocks} random per query block")
    return _weights_path(mech, call), pattern, note, {}


def _lsh(mech, call):
    _, weights = mech.attention_weights(call.q, call.k, call.v, causal=call.causal,
                                        key_padding_mask=call.key_padding_mask)
    keys = F.normalize(call.q, dim=-1) if mech.shared_qk else call.k
    note = (f"LSH: {mech.n_hashes} round(s) of {mech.n_buckets} buckets, mapped back to "
            f"positions; zero where a query never met the key")
    return weights, weights != 0, note, {"buckets": mech.buckets(keys)}


def linformer_projected(mech, call: Call) -> tuple[Tensor, Tensor, Tensor]:
    """Linformer's weights over its k projected keys, (B, H, Tq, k), and E, F sliced to Tk.

    The same computation as `LinformerAttention.attend` (tests hold (W F) v equal to its
    output), without its query blocking."""
    q, k = call.q, call.k
    n, Dh = k.shape[2], q.shape[3]
    E = mech.proj_k[..., :n].to(q.dtype)
    Fm = E if mech.proj_v is None else mech.proj_v[..., :n].to(q.dtype)
    eq = "hrn,bhnd->bhrd" if mech.headwise else "rn,bhnd->bhrd"
    if call.key_padding_mask is None:
        keep = (torch.linalg.vector_norm(E, ord=1, dim=-1) > 0)[..., None, :]
    else:
        real = call.key_padding_mask.to(q.dtype)
        k = k.masked_fill(~call.key_padding_mask[:, None, :, None], 0.0)
        fed = (torch.einsum("hrn,bn->bhr", E.abs(), real) if mech.headwise
               else (real @ E.abs().T)[:, None])
        keep = (fed > 0)[:, :, None, :]
    kp = torch.einsum(eq, E, k) * mech.softmax_scale(Dh)  # (B, H, k, Dh)
    return masked_softmax(q @ kp.transpose(-2, -1), keep), E, Fm


def _linformer(mech, call):
    W, E, Fm = linformer_projected(mech, call)  # (B, H, Tq, k)
    # out = W (F v'), v' the values with padding zeroed: the coefficient of value j is (W F)_ij.
    eq = "bhqr,hrn->bhqn" if mech.headwise else "bhqr,rn->bhqn"
    weights = torch.einsum(eq, W, Fm)
    if call.key_padding_mask is not None:
        weights = weights * call.key_padding_mask[:, None, None, :]
    note = (f"Linformer: softmax over {W.shape[-1]} projected keys; shown at positions as W F "
            f"(signed, rows need not sum to 1)")
    return weights, _allowed(call), note, {"projected": W, "proj_k": E, "proj_v": Fm}


def _luong_local(mech, call):
    weights = _weights_path(mech, call)
    how = ("a window at the query's own position (local-m)" if mech.mode == "m" else
           "a window at the predicted position, times a Gaussian (local-p: rows need not sum "
           "to 1)")
    return weights, weights > 0, f"Luong local: {2 * mech.window + 1} keys of {how}", {}


#: mechanism name -> report(mech, call) -> (weights, pattern, note, extra)
REPORTS: dict[str, Callable] = {
    "full": lambda m, c: _dense(m, c, "softmax(q k^T / sqrt(d))"),
    "flash": _flash,
    "hard": _hard,
    "local": _local,
    "longformer": _longformer,
    "bigbird": _bigbird,
    "performer": lambda m, c: _dense(m, c, "Performer: normalized FAVOR+ kernel weights "
                                           "(an approximation of softmax)"),
    "lsh": _lsh,
    "linformer": _linformer,
    "luong": lambda m, c: _dense(m, c, f"Luong's {m.scorer.score} score, softmax over the "
                                       f"keys"),
    "luong-local": _luong_local,
}


def report(mech: Attention, call: Call) -> tuple[Tensor, Tensor, str, dict]:
    """(weights, pattern, note, extra) of one mechanism call; see the module doc."""
    fn = REPORTS.get(mech.name)
    if fn is None:
        raise CapabilityError(f"attention '{mech.name}' has no attention report for "
                              f"visualization; add one to attnlab.viz.capture.REPORTS")
    was_training = mech.training
    mech.train(False)  # no dropout, no redraw: the attention the forward pass used
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return fn(mech, call)
    finally:
        mech.train(was_training)


class AttentionCapture:
    """The records of a `capture_attention` context, in call order."""

    def __init__(self):
        self.records: list[AttentionRecord] = []

    def by_name(self) -> dict[str, AttentionRecord]:
        return {r.name: r for r in self.records}


@contextlib.contextmanager
def capture_attention(model: nn.Module, *, only: Callable[[str], bool] | None = None
                      ) -> Iterator[AttentionCapture]:
    """Record every attention layer's weights while the context is open.

    Args:
        model: any module holding `MultiHeadAttention` layers.
        only: keep the layers whose module path it accepts (default: all).

    Yields:
        an `AttentionCapture`; its `records` fill up as the model runs.
    """
    cap = AttentionCapture()
    handles = []
    layers = [(name, m) for name, m in model.named_modules()
              if isinstance(m, MultiHeadAttention) and (only is None or only(name))]
    if not layers:
        raise CapabilityError(f"{type(model).__name__} has no attention layers to capture")
    for name, mha in layers:
        state = {}

        def pre(module, args, kwargs, state=state):
            context = args[1] if len(args) > 1 else kwargs.get("context")
            state["kind"] = "self" if context is None else "cross"

        def hook(mech, args, kwargs, output, name=name, state=state):
            q, k, v = args
            call = Call(q.detach(), k.detach(), v.detach(), bool(kwargs.get("causal", False)),
                        kwargs.get("key_padding_mask"), kwargs.get("bias"))
            weights, pattern, note, extra = report(mech, call)
            cap.records.append(AttentionRecord(
                name=name, kind=state.get("kind", "self"), mechanism=mech.name,
                weights=weights.detach().float().cpu(), pattern=pattern.detach().bool().cpu(),
                note=note, extra={k_: t.detach().cpu() for k_, t in extra.items()}))

        handles.append(mha.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(mha.attn.register_forward_hook(hook, with_kwargs=True))
    try:
        yield cap
    finally:
        for h in handles:
            h.remove()
