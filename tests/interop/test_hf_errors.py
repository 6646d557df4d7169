"""Bad Hugging Face inputs are one clear line each (the parity itself is tests/models)."""

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from attnlab.errors import AttnlabError
from attnlab.interop import gpt_from_hf


@pytest.fixture(scope="module")
def gpt2():
    cfg = GPT2Config(vocab_size=17, n_positions=8, n_embd=16, n_layer=1, n_head=2)
    return cfg.to_dict(), GPT2LMHeadModel(cfg).state_dict()


def test_unsupported_architecture_names_what_is_supported(gpt2):
    config, tensors = gpt2
    with pytest.raises(AttnlabError, match="model_type 'bert' is not supported; supported: gpt2"):
        gpt_from_hf({**config, "model_type": "bert"}, tensors)


def test_missing_and_mismatched_tensors_are_named(gpt2):
    config, tensors = gpt2
    partial = {k: v for k, v in tensors.items() if k != "transformer.h.0.mlp.c_fc.weight"}
    with pytest.raises(AttnlabError, match=r"no tensor 'transformer\.h\.0\.mlp\.c_fc\.weight'"):
        gpt_from_hf(config, partial)
    wrong = {**tensors, "transformer.wpe.weight": torch.zeros(9, 16)}
    with pytest.raises(AttnlabError, match=r"'transformer.wpe.weight' has shape \(9, 16\)"):
        gpt_from_hf(config, wrong)


def test_llama_rope_scaling_is_refused_not_ignored():
    config = {"model_type": "llama", "vocab_size": 11, "hidden_size": 16,
              "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
              "rope_scaling": {"rope_type": "yarn", "factor": 4.0}}
    with pytest.raises(AttnlabError, match="RoPE scaling 'yarn' is not supported"):
        gpt_from_hf(config, {})
