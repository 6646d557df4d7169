"""Building blocks: positional encodings, feed-forward networks, norms, the Block."""

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

__all__ = [
    "FEEDFORWARD",
    "NORMS",
    "POSITIONAL",
    "ALiBiPositional",
    "Block",
    "FeedForward",
    "LearnedPositional",
    "NoPositional",
    "PositionalEncoding",
    "RotaryPositional",
    "SinusoidalPositional",
    "build_norm",
    "build_positional",
]
