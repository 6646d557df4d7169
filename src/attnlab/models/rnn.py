"""LSTM encoder-decoder, the historical baseline attention grew out of.

Four decoders over one LSTM encoder (optionally bidirectional):

    none        h_t = LSTM(E y_{t-1}, h_{t-1});  logits = W_s h_t
                (Sutskever et al., 2014: the encoder's final state is all the decoder sees)
    luong       h_t = LSTM([E y_{t-1}; h~_{t-1}], h_{t-1})   (input feeding)
    luong-local c_t = attend(h_t, encoder states);  h~_t = tanh(W_c [c_t; h_t]);  logits = W_s h~_t
                (Luong, Pham & Manning, 2015: global, or local-m / local-p windows)
    bahdanau    c_t = attend(s_{t-1}, encoder states);  s_t = LSTM([E y_{t-1}; c_t], s_{t-1})
                logits = W_s tanh(W_c [c_t; s_t])   (Bahdanau, Cho & Bengio, 2015)

Attention goes through the registry (`luong`, `luong-local`) with one head whose q is the top
decoder layer's state and whose k = v are the encoder states (B, 1, S, hidden).

Departures: Bahdanau used a GRU, a bidirectional encoder always, s_0 = tanh(W h_1_backward) and
a maxout deep output; here the decoder is an LSTM started from the encoder's final state (as
Luong's), and the output layer is Luong's tanh(W_c [c; s]). The bidirectional encoder has
hidden / 2 units per direction, so its states and its final (h, c), concatenated, are `hidden`
wide and need no bridge layer.

Speed on CPU: over hundreds of steps the gradients reaching early steps vanish into float32's
denormal range, where x86 arithmetic is slow (measured: one LSTM layer, 256 steps, 13x slower
forward + backward); `torch.set_flush_denormal(True)` avoids it, as benchmarks/rnn_length.py
does. It is process-wide state, so the model does not set it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlab.attention.registry import build
from attnlab.errors import AttnlabError, ConfigError, did_you_mean
from attnlab.models.config import _check_types, check_positive, from_dict

ATTENTIONS = ("none", "bahdanau", "luong", "luong-local")
#: the paper's score when `score` is left empty
DEFAULT_SCORE = {"bahdanau": "concat", "luong": "general", "luong-local": "general"}


@dataclass
class RNNSeq2SeqConfig:
    """An LSTM encoder-decoder.

    Args:
        vocab_size: one vocabulary for source and target (separate embeddings).
        d_embed: embedding width.
        hidden: LSTM state width (a bidirectional encoder has hidden / 2 per direction).
        n_layers: stacked LSTM layers in the encoder and in the decoder.
        bidirectional: the encoder reads both ways.
        attention: none, bahdanau, luong (global) or luong-local.
        score: dot, general or concat; empty = the paper's (bahdanau concat, luong general).
        local_mode: luong-local's "m" (p_t = t) or "p" (predicted p_t with a Gaussian).
        window: luong-local's half width D.
        input_feeding: Luong's input feeding (h~_{t-1} joins the next input); without it the
            decoder runs over the whole target at once.
        dropout: on embeddings, between LSTM layers and on h~.
        max_len: the longest sequence a run trains on (bookkeeping for throughput).
    """

    vocab_size: int = 32
    d_embed: int = 64
    hidden: int = 128
    n_layers: int = 1
    bidirectional: bool = False
    attention: str = "luong"
    score: str = ""
    local_mode: str = "p"
    window: int = 8
    input_feeding: bool = True
    dropout: float = 0.0
    max_len: int = 64

    def __post_init__(self):
        _check_types(self)
        check_positive(self, "vocab_size", "d_embed", "hidden", "n_layers", "max_len")
        if self.attention not in ATTENTIONS:
            raise ConfigError(f"unknown rnn attention '{self.attention}'"
                              f"{did_you_mean(self.attention, ATTENTIONS)}; choose from: "
                              f"{', '.join(ATTENTIONS)}")
        if self.bidirectional and self.hidden % 2:
            raise ConfigError(f"a bidirectional encoder needs an even hidden, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.score and self.attention == "none":
            raise ConfigError("score is set but attention is 'none'")

    @property
    def d_model(self) -> int:
        """The decoder's state width (what `attnlab recipes` and the Noam schedule read)."""
        return self.hidden

    @property
    def attention_score(self) -> str:
        return self.score or DEFAULT_SCORE.get(self.attention, "")

    @classmethod
    def from_dict(cls, values, where: str = ""):
        return from_dict(cls, values, where)

    def to_dict(self) -> dict:
        import dataclasses

        return dataclasses.asdict(self)


class RNNSeq2Seq(nn.Module):
    """LSTM encoder-decoder with no attention, Bahdanau's, or Luong's global / local attention.

    `forward(src, tgt_in)` is teacher-forced and returns (B, T, V) logits; `greedy(src, n)`
    decodes. Source padding is on the right, given as `src_key_padding_mask` (B, S) True = real.

    Args:
        config: an `RNNSeq2SeqConfig`.
    """

    def __init__(self, config: RNNSeq2SeqConfig):
        super().__init__()
        self.config = c = config
        H, E = c.hidden, c.d_embed
        self.src_emb = nn.Embedding(c.vocab_size, E)
        self.tgt_emb = nn.Embedding(c.vocab_size, E)
        self.drop = nn.Dropout(c.dropout)
        between = c.dropout if c.n_layers > 1 else 0.0
        self.encoder = nn.LSTM(E, H // 2 if c.bidirectional else H, c.n_layers,
                               batch_first=True, bidirectional=c.bidirectional, dropout=between)
        self.feeds = c.attention == "bahdanau" or (c.attention != "none" and c.input_feeding)
        self.decoder = nn.LSTM(E + (H if self.feeds else 0), H, c.n_layers, batch_first=True,
                               dropout=between)
        self.attn = None
        if c.attention == "luong" or c.attention == "bahdanau":
            self.attn = build("luong", score=c.attention_score, head_dim=H)
        elif c.attention == "luong-local":
            self.attn = build("luong-local", mode=c.local_mode, window=c.window,
                              score=c.attention_score, head_dim=H)
        self.combine = nn.Linear(2 * H, H, bias=False) if self.attn is not None else None
        self.head = nn.Linear(H, c.vocab_size)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _check(self, ids: Tensor, what: str) -> None:
        if ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            raise AttnlabError(f"{what} must be a (B, T) integer tensor")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.config.vocab_size):
            raise AttnlabError(f"{what} must lie in [0, {self.config.vocab_size})")

    def encode(self, src: Tensor, src_key_padding_mask: Tensor | None = None):
        """src (B, S) -> encoder states (B, S, hidden) and the decoder's initial (h, c)."""
        self._check(src, "source token ids")
        x = self.drop(self.src_emb(src))  # (B, S, E)
        if src_key_padding_mask is not None:
            lengths = src_key_padding_mask.sum(1).cpu()
            if int(lengths.min()) < 1:
                raise AttnlabError("every source row needs at least one real token")
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.encoder(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        else:
            out, (h, c) = self.encoder(x)
        if self.config.bidirectional:  # (2 L, B, H/2) -> (L, B, H): [forward; backward]
            L = self.config.n_layers
            h = h.view(L, 2, *h.shape[1:]).transpose(1, 2).reshape(L, h.shape[1], -1)
            c = c.view(L, 2, *c.shape[1:]).transpose(1, 2).reshape(L, c.shape[1], -1)
        return out, (h, c)

    def _attend(self, query: Tensor, memory: Tensor, mask: Tensor | None, start: int,
                need_weights: bool):
        """query (B, Tq, H) against memory (B, S, H), one head -> (B, Tq, H), weights."""
        q, kv = query.unsqueeze(1), memory.unsqueeze(1)  # (B, 1, Tq, H), (B, 1, S, H)
        extra = {"query_start": start} if self.config.attention == "luong-local" else {}
        ctx, w = self.attn(q, kv, kv, key_padding_mask=mask, need_weights=need_weights, **extra)
        return ctx.squeeze(1), (w.squeeze(1) if w is not None else None)

    def _output(self, ctx: Tensor, h: Tensor) -> Tensor:
        return self.drop(torch.tanh(self.combine(torch.cat([ctx, h], -1))))  # h~

    def step(self, y: Tensor, carry, memory: Tensor, mask: Tensor | None, t: int,
             need_weights: bool = False):
        """One decoder step: y (B,) the previous token; carry = (state, fed) from the last step.
        Returns the (B, H) output state and the new carry (and the step's weights)."""
        state, fed = carry
        x = self.drop(self.tgt_emb(y))  # (B, E)
        w = None
        if self.config.attention == "bahdanau":  # attend from s_{t-1}, feed c_t into the LSTM
            ctx, w = self._attend(state[0][-1][:, None], memory, mask, t, need_weights)
            ctx = ctx[:, 0]
            out, state = self.decoder(torch.cat([x, ctx], -1)[:, None], state)
            o = self._output(ctx, out[:, 0])
            return o, (state, None), w
        if self.feeds:
            x = torch.cat([x, fed], -1)
        out, state = self.decoder(x[:, None], state)  # (B, 1, H)
        h = out[:, 0]
        if self.attn is None:
            return h, (state, None), None
        ctx, w = self._attend(h[:, None], memory, mask, t, need_weights)
        o = self._output(ctx[:, 0], h)
        return o, (state, o), w

    def _start(self, memory: Tensor, state):
        fed = memory.new_zeros(memory.shape[0], self.config.hidden) if self.feeds else None
        return state, fed

    def forward(self, src: Tensor, tgt_in: Tensor, *, src_key_padding_mask: Tensor | None = None,
                need_weights: bool = False):
        """Teacher forcing: src (B, S), tgt_in (B, T) (starting with BOS) -> logits (B, T, V);
        with `need_weights`, also the (B, T, S) attention weights."""
        self._check(tgt_in, "target token ids")
        memory, state = self.encode(src, src_key_padding_mask)
        mask = src_key_padding_mask
        weights = None
        if not self.feeds:  # the whole target through the LSTM at once
            out, _ = self.decoder(self.drop(self.tgt_emb(tgt_in)), state)  # (B, T, H)
            if self.attn is not None:
                ctx, weights = self._attend(out, memory, mask, 0, need_weights)
                out = self._output(ctx, out)
            logits = self.head(out)
        else:
            carry = self._start(memory, state)
            outs, ws = [], []
            for t in range(tgt_in.shape[1]):
                o, carry, w = self.step(tgt_in[:, t], carry, memory, mask, t, need_weights)
                outs.append(o)
                ws.append(w)
            logits = self.head(torch.stack(outs, 1))
            if need_weights:
                weights = torch.cat(ws, 1)
        return (logits, weights) if need_weights else logits

    @torch.no_grad()
    def greedy(self, src: Tensor, steps: int, *, bos: int, eos: int | None = None,
               src_key_padding_mask: Tensor | None = None) -> Tensor:
        """Greedy decoding of `steps` tokens after BOS: (B, steps); rows that emitted `eos`
        keep emitting it."""
        memory, state = self.encode(src, src_key_padding_mask)
        carry = self._start(memory, state)
        y = torch.full((src.shape[0],), bos, dtype=torch.long, device=src.device)
        done = torch.zeros_like(y, dtype=torch.bool)
        out = []
        for t in range(steps):
            o, carry, _ = self.step(y, carry, memory, src_key_padding_mask, t)
            y = self.head(o).argmax(-1)
            if eos is not None:
                y = torch.where(done, torch.full_like(y, eos), y)
                done |= y == eos
            out.append(y)
            if eos is not None and bool(done.all()):
                out += [torch.full_like(y, eos)] * (steps - t - 1)
                break
        return torch.stack(out, 1)
