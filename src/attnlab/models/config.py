"""Typed model configurations. Every value is checked when the config is made, so a bad one
fails with one clear line before any tensor is allocated."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from attnlab.attention import registry
from attnlab.errors import ConfigError, did_you_mean
from attnlab.layers.feedforward import FEEDFORWARD
from attnlab.layers.norms import NORMS
from attnlab.layers.positional import POSITIONAL

_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "None": type(None)}


def check_positive(config, *names: str) -> None:
    """Each named field of `config` must be >= 1 (one ConfigError naming the first that is not)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ConfigError(f"{name} must be an integer >= 1, got {getattr(config, name)}")


def _check_types(config) -> None:
    """Each field holds a value of its annotated type (ints are accepted as floats)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        names = [t.strip() for t in str(f.type).split("|")]
        if names[0].startswith("dict"):
            ok = isinstance(value, dict)
        else:
            allowed = tuple(_TYPES[n] for n in names)
            if float in allowed and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(config, f.name, value)
            ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in
                                                     allowed)
        if not ok:
            raise ConfigError(f"{f.name} must be {f.type}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):  # no field means NaN or inf
            raise ConfigError(f"{f.name} must be a finite number, got {value}")


def from_dict(cls, values: dict[str, Any], where: str = ""):
    """Build dataclass `cls` from a plain dict; an unknown key names the nearest field.

    `where` prefixes key names in messages ("train." -> "unknown key 'train.lrr'").
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.') or cls.__name__} must be a mapping of keys to "
                          f"values, got {values!r}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            raise ConfigError(f"unknown {cls.__name__} key '{where}{key}'"
                              f"{did_you_mean(where + key, [where + n for n in names])}")
    return cls(**values)


def _check_choice(kind: str, value: str, choices) -> None:
    if value not in choices:
        raise ConfigError(f"unknown {kind} '{value}'{did_you_mean(value, choices)}; "
                          f"choose from: {', '.join(choices)}")


@dataclass
class TransformerConfig:
    """What every stack of Blocks shares.

    Args:
        vocab_size: token vocabulary.
        d_model: residual width.
        n_heads: attention heads; must divide d_model.
        n_kv_heads: key/value heads for grouped-query attention (default n_heads).
        n_layers: number of Blocks (the encoder's, in an encoder-decoder).
        d_ff: feed-forward hidden width (default 4 * d_model).
        attention: registered mechanism name (see `attnlab.attention.available()`).
        attention_options: options of that mechanism, e.g. {"window": 64} for local.
        positional: none, sinusoidal, learned, rope or alibi.
        rope_theta: base of RoPE's frequencies.
        max_len: longest sequence (a hard limit for learned positions only).
        activation: relu, gelu, gelu_tanh, silu or swiglu.
        norm: layernorm or rmsnorm.
        norm_eps: epsilon of the norms.
        norm_first: pre-norm (True) or the paper's post-norm (False).
        final_norm: a norm after the last Block (default: on for pre-norm, off for post-norm).
        dropout: embedding, residual and feed-forward dropout (attention-weight dropout is the
            mechanism's own `dropout` option).
        bias: biases in linear layers and LayerNorms.
        reversible: run the Blocks as reversible residual layers (Reformer), y1 = x1 + Attn(x2),
            y2 = x2 + FFN(y1) on two streams averaged at the end: activation memory stays flat
            in depth for one extra forward per layer in backward. A different function from
            the plain stack with the same weights. Pre-norm only; no cross-attention (so not in
            an encoder-decoder) and no KV-cached decoding.
        ff_chunks: 0 = off; else the feed-forward runs on chunks of this many positions,
            recomputing each chunk's hidden activation in backward, so no (B, T, d_ff) tensor
            is ever held. Same values and gradients. The FFN's weights then sit under
            `ffn.ffn.` instead of `ffn.` in the state dict.
    """

    vocab_size: int = 256
    d_model: int = 128
    n_heads: int = 4
    n_kv_heads: int | None = None
    n_layers: int = 2
    d_ff: int | None = None
    attention: str = "full"
    attention_options: dict[str, Any] = field(default_factory=dict)
    positional: str = "learned"
    rope_theta: float = 10000.0
    max_len: int = 1024
    activation: str = "gelu"
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_first: bool = True
    final_norm: bool | None = None
    dropout: float = 0.0
    bias: bool = True
    reversible: bool = False
    ff_chunks: int = 0

    def __post_init__(self):
        _check_types(self)
        check_positive(self, "vocab_size", "d_model", "n_heads", "n_layers", "max_len")
        if self.ff_chunks < 0:
            raise ConfigError(f"ff_chunks must be an integer >= 0 (0 = off), "
                              f"got {self.ff_chunks}")
        if self.reversible and not self.norm_first:
            raise ConfigError("reversible=True needs pre-norm layers (norm_first=True): a "
                              "post-norm layer cannot be undone by a subtraction")
        if self.d_model % self.n_heads:
            raise ConfigError(f"d_model {self.d_model} is not divisible by n_heads "
                              f"{self.n_heads}; pick a multiple")
        if self.n_kv_heads is not None and (self.n_kv_heads < 1 or
                                            self.n_heads % self.n_kv_heads):
            raise ConfigError(f"n_kv_heads {self.n_kv_heads} must divide n_heads {self.n_heads}")
        if self.d_ff is not None and self.d_ff < 1:
            raise ConfigError(f"d_ff must be >= 1, got {self.d_ff}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ConfigError(f"norm_eps and rope_theta must be > 0, got {self.norm_eps} and "
                              f"{self.rope_theta}")
        registry.get(self.attention)  # unknown names fail here, with the nearest suggested
        valid = registry.options(self.attention)
        for key in self.attention_options:
            if key not in valid:
                raise ConfigError(f"attention '{self.attention}' has no option '{key}'"
                                  f"{did_you_mean(key, valid)}; its options: "
                                  f"{', '.join(valid) or 'none'}")
        _check_choice("positional encoding", self.positional, POSITIONAL)
        _check_choice("activation", self.activation, FEEDFORWARD)
        _check_choice("norm", self.norm, NORMS)
        if self.positional == "alibi" and not registry.get(self.attention).capabilities.bias:
            raise ConfigError(f"positional 'alibi' biases attention scores, which attention "
                              f"'{self.attention}' cannot take; use rope, learned or sinusoidal")
        if self.positional == "rope" and (self.d_model // self.n_heads) % 2:
            raise ConfigError(f"RoPE needs an even head dimension; d_model / n_heads = "
                              f"{self.d_model // self.n_heads}")

    @property
    def ffn_dim(self) -> int:
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @property
    def use_final_norm(self) -> bool:
        return self.norm_first if self.final_norm is None else self.final_norm

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = ""):
        """Build from a plain dict; an unknown key is an error that names the nearest field."""
        return from_dict(cls, values, where)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GPTConfig(TransformerConfig):
    """Decoder-only language model (GPT-2 style by default).

    Args:
        tie_embeddings: the output head shares the token embedding matrix.
    """

    tie_embeddings: bool = True

    def __post_init__(self):
        super().__post_init__()
        _require_causal(self.attention, "a decoder-only model")


def _require_causal(attention: str, what: str) -> None:
    if not registry.get(attention).capabilities.causal:
        causal = [n for n, c in registry.available().items() if c.causal]
        raise ConfigError(f"attention '{attention}' is not causal, so it cannot be used in "
                          f"{what}; causal mechanisms: {', '.join(causal)}")


@dataclass
class EncoderConfig(TransformerConfig):
    """Bidirectional encoder (BERT style) with a pooled output.

    Args:
        pooling: "cls" (first token through a dense + tanh, as BERT) or "mean" (over real
            tokens, as sentence-transformers).
        num_classes: width of the classifier head on the pooled output; 0 = no head.
        type_vocab_size: token types (BERT's segments A/B) with a learned embedding each, added
            to the token embeddings; 0 = none.
        embed_norm: a norm (`norm`, `norm_eps`) over the summed embeddings before the first
            Block, as BERT's embedding LayerNorm.
    """

    pooling: str = "cls"
    num_classes: int = 0
    type_vocab_size: int = 0
    embed_norm: bool = False

    def __post_init__(self):
        super().__post_init__()
        _check_choice("pooling", self.pooling, ("cls", "mean"))
        if self.num_classes < 0:
            raise ConfigError(f"num_classes must be >= 0, got {self.num_classes}")
        if self.type_vocab_size < 0:
            raise ConfigError(f"type_vocab_size must be >= 0 (0 = no token types), got "
                              f"{self.type_vocab_size}")


@dataclass
class Seq2SeqConfig(TransformerConfig):
    """Encoder-decoder of "Attention Is All You Need". Defaults follow the paper: post-norm,
    sinusoidal positions, ReLU, embeddings scaled by sqrt(d_model), shared embeddings.

    `attention` and `attention_options` (its dropout included) configure the self-attention
    of encoder and decoder. The decoder's cross-attention is always full scaled dot-product
    attention without attention dropout: it is not the quadratic-in-one-sequence part the
    efficient mechanisms replace.

    Args:
        n_decoder_layers: decoder depth (default: n_layers).
        tgt_vocab_size: target vocabulary (default: vocab_size, with shared embeddings).
        share_embeddings: source and target share one embedding (needs equal vocabularies).
        tie_embeddings: the output head shares the target embedding matrix.
        scale_embeddings: multiply embeddings by sqrt(d_model) (§3.4).
    """

    positional: str = "sinusoidal"
    activation: str = "relu"
    norm_first: bool = False
    n_decoder_layers: int | None = None
    tgt_vocab_size: int | None = None
    share_embeddings: bool = True
    tie_embeddings: bool = True
    scale_embeddings: bool = True

    def __post_init__(self):
        if self.reversible is True:  # checked first: the norm_first advice would not mend it
            raise ConfigError("reversible=True is not available for an encoder-decoder: its "
                              "decoder's cross-attention cannot be made reversible; set "
                              "reversible=False")
        super().__post_init__()
        if self.n_decoder_layers is not None and self.n_decoder_layers < 1:
            raise ConfigError(f"n_decoder_layers must be >= 1 (or None: n_layers), got "
                              f"{self.n_decoder_layers}")
        _require_causal(self.attention, "the decoder of an encoder-decoder")
        if self.share_embeddings and self.target_vocab != self.vocab_size:
            raise ConfigError("share_embeddings needs tgt_vocab_size == vocab_size; set "
                              "share_embeddings=False for separate vocabularies")

    @property
    def target_vocab(self) -> int:
        return self.tgt_vocab_size or self.vocab_size

    @property
    def decoder_layers(self) -> int:
        return self.n_decoder_layers or self.n_layers
