"""Building blocks: positional encodings, feed-forward networks, norms, the Block, reversible
layers."""

from attnlab.layers.block import Block
from attnlab.layers.feedforward import FEEDFORWARD, FeedForward
from attnlab.layers.norms import NORMS, build_norm
from attnlab.layers.positional import (
    POSITIONAL,
    ALiBiPositional,
    LearnedPositional,
    NoPositional,
    PositionalEncoding,
    RotaryPositional,
    SinusoidalPositional,
    build_positional,
)
from attnlab.layers.reversible import (
    AttentionSublayer,
    ChunkedFeedForward,
    FeedForwardSublayer,
    ReversibleSequence,
)

__all__ = [
    "FEEDFORWARD",
    "NORMS",
    "POSITIONAL",
    "ALiBiPositional",
    "AttentionSublayer",
    "Block",
    "ChunkedFeedForward",
    "FeedForward",
    "FeedForwardSublayer",
    "LearnedPositional",
    "NoPositional",
    "PositionalEncoding",
    "ReversibleSequence",
    "RotaryPositional",
    "SinusoidalPositional",
    "build_norm",
    "build_positional",
]
