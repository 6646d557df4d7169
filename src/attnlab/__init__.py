"""attnlab: the Transformer family in PyTorch, every attention mechanism an interchangeable part."""

from attnlab.attention import (
    Attention,
    Capabilities,
    KVCache,
    MultiHeadAttention,
    available,
    build,
    register,
)
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.interop import load_pretrained, save_hf_folder, sentence_embedding
from attnlab.layers import Block, FeedForward, build_norm, build_positional
from attnlab.models import (
    GPT,
    MODELS,
    Encoder,
    EncoderConfig,
    EncoderDecoder,
    GPTConfig,
    Seq2SeqConfig,
    TransformerConfig,
)

__version__ = "0.1.0"

__all__ = [
    "GPT",
    "MODELS",
    "Attention",
    "AttnlabError",
    "Block",
    "Capabilities",
    "CapabilityError",
    "ConfigError",
    "Encoder",
    "EncoderConfig",
    "EncoderDecoder",
    "FeedForward",
    "GPTConfig",
    "KVCache",
    "MultiHeadAttention",
    "Seq2SeqConfig",
    "TransformerConfig",
    "__version__",
    "available",
    "build",
    "build_norm",
    "build_positional",
    "load_pretrained",
    "register",
    "save_hf_folder",
    "sentence_embedding",
]
