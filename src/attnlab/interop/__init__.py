"""Interop with the Hugging Face format: build attnlab models from HF configs and weights."""

from attnlab.interop.hf import SUPPORTED, gpt_from_hf

__all__ = ["SUPPORTED", "gpt_from_hf"]
