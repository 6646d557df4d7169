"""The architectures, all built from the same Blocks and attention registry."""

from attnlab.models.config import EncoderConfig, GPTConfig, Seq2SeqConfig, TransformerConfig
from attnlab.models.encoder import Encoder
from attnlab.models.gpt import GPT
from attnlab.models.seq2seq import EncoderDecoder
from attnlab.models.transformer import StackCache, TransformerStack

#: Model name -> (class, config class), for configs and the CLI.
MODELS = {
    "gpt": (GPT, GPTConfig),
    "encoder": (Encoder, EncoderConfig),
    "seq2seq": (EncoderDecoder, Seq2SeqConfig),
}

__all__ = [
    "GPT",
    "MODELS",
    "Encoder",
    "EncoderConfig",
    "EncoderDecoder",
    "GPTConfig",
    "Seq2SeqConfig",
    "StackCache",
    "TransformerConfig",
    "TransformerStack",
]
