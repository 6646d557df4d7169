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
from attnlab.beam import beam_search, greedy_search
from attnlab.data.pairs import load_pairs
from attnlab.data.sentiment import load_sentiment
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.generate import GenerationConfig, generate_text
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
from attnlab.models.decision import DecisionConfig, DecisionTransformer
from attnlab.models.function_gpt import FunctionGPT, FunctionGPTConfig
from attnlab.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from attnlab.models.swap import with_attention
from attnlab.models.timeseries import ForecastConfig, Forecaster
from attnlab.models.vit import VisionConfig, ViT
from attnlab.tasks.icl import icl_accuracy, load_labelled, score_labels
from attnlab.tasks.run import evaluate_run, load_run, prepare_run, train_run
from attnlab.tasks.text_classify import TextClassifierConfig, predict_texts
from attnlab.viz import attention_rollout, capture_attention

__version__ = "0.1.0"

# `generate` itself stays in attnlab.generate: re-exported here, the function would shadow
# the submodule of the same name (`attnlab.generate.sample_next` would break).

__all__ = [
    "GPT",
    "MODELS",
    "Attention",
    "AttnlabError",
    "Block",
    "Capabilities",
    "CapabilityError",
    "ConfigError",
    "DecisionConfig",
    "DecisionTransformer",
    "Encoder",
    "EncoderConfig",
    "EncoderDecoder",
    "FeedForward",
    "ForecastConfig",
    "Forecaster",
    "FunctionGPT",
    "FunctionGPTConfig",
    "GPTConfig",
    "GenerationConfig",
    "KVCache",
    "MultiHeadAttention",
    "RNNSeq2Seq",
    "RNNSeq2SeqConfig",
    "Seq2SeqConfig",
    "TextClassifierConfig",
    "TransformerConfig",
    "ViT",
    "VisionConfig",
    "__version__",
    "attention_rollout",
    "available",
    "beam_search",
    "build",
    "build_norm",
    "build_positional",
    "capture_attention",
    "evaluate_run",
    "generate_text",
    "greedy_search",
    "icl_accuracy",
    "load_labelled",
    "load_pairs",
    "load_pretrained",
    "load_run",
    "load_sentiment",
    "predict_texts",
    "prepare_run",
    "register",
    "save_hf_folder",
    "score_labels",
    "sentence_embedding",
    "train_run",
    "with_attention",
]
