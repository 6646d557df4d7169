"""Data: named corpora and local text, tokenizers, and memory-mapped token streams."""

from __future__ import annotations

from attnlab.data.corpora import (
    CORPORA,
    Corpus,
    cache_dir,
    corpus_info,
    corpus_path,
    get_corpus,
    list_corpora,
    load_text,
    markdown_to_text,
    prepare_corpus,
)
from attnlab.data.tokenizers import (
    BPETokenizer,
    CharTokenizer,
    Tokenizer,
    load_tokenizer,
    safe_chunks,
    tokenizer_from_json,
    train_tokenizer,
)
from attnlab.data.tokens import (
    TokenSplits,
    encode_corpus,
    eval_batches,
    sample_batch,
    token_dtype,
    tokenizer_fingerprint,
)

__all__ = [
    "CORPORA",
    "BPETokenizer",
    "CharTokenizer",
    "Corpus",
    "TokenSplits",
    "Tokenizer",
    "cache_dir",
    "corpus_info",
    "corpus_path",
    "encode_corpus",
    "eval_batches",
    "get_corpus",
    "list_corpora",
    "load_text",
    "load_tokenizer",
    "markdown_to_text",
    "prepare_corpus",
    "safe_chunks",
    "sample_batch",
    "token_dtype",
    "tokenizer_fingerprint",
    "tokenizer_from_json",
    "train_tokenizer",
]
