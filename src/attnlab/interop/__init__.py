"""Interop with the Hugging Face format, GGUF files and named pretrained models: load HF folders
and GGUF files into attnlab models, export attnlab models as HF folders, fetch pinned
pretrained weights."""

from attnlab.interop.folder import (
    Conversion,
    convert,
    folder_kind,
    load_attnlab_folder,
    load_hf_folder,
    load_pretrained,
    read_hf_tensors,
    save_attnlab_folder,
    save_hf_folder,
)
from attnlab.interop.gguf import ChatTemplate, ChatTokenizer, load_gguf, read_gguf_model
from attnlab.interop.hf import (
    SUPPORTED,
    encoder_from_hf,
    encoder_to_hf,
    gpt_from_hf,
    gpt_to_hf,
    model_from_hf,
    model_to_hf,
)
from attnlab.interop.sentence import sentence_embedding
from attnlab.interop.sources import (
    MODEL_SOURCES,
    ModelSource,
    fetch_model,
    get_model_source,
    list_models,
    model_path,
)
from attnlab.interop.tokenizer import HFTokenizer

__all__ = [
    "MODEL_SOURCES",
    "SUPPORTED",
    "ChatTemplate",
    "ChatTokenizer",
    "Conversion",
    "HFTokenizer",
    "ModelSource",
    "convert",
    "encoder_from_hf",
    "encoder_to_hf",
    "fetch_model",
    "folder_kind",
    "get_model_source",
    "gpt_from_hf",
    "gpt_to_hf",
    "list_models",
    "load_attnlab_folder",
    "load_gguf",
    "load_hf_folder",
    "load_pretrained",
    "model_from_hf",
    "model_path",
    "model_to_hf",
    "read_gguf_model",
    "read_hf_tensors",
    "save_attnlab_folder",
    "save_hf_folder",
    "sentence_embedding",
]
