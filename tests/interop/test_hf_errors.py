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
    with pytest.raises(AttnlabError, match="model_type 't5' is not a supported causal LM; "
                                           "supported: gpt2, llama"):
        gpt_from_hf({**config, "model_type": "t5"}, tensors)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("scale_attn_by_inverse_layer_idx", True, r"scale_attn_by_inverse_layer_idx=True is not "
                                              r"supported \(no per-layer score scaling\)"),
    ("scale_attn_weights", False, "scale_attn_weights=False is not supported"),
    ("activation_function", "quick_gelu", "activation 'quick_gelu' is not supported"),
])
def test_gpt2_settings_attnlab_does_not_compute_are_refused(gpt2, key, value, message):
    config, tensors = gpt2
    with pytest.raises(AttnlabError, match=message):
        gpt_from_hf({**config, key: value}, tensors)


def test_a_config_missing_a_size_says_which(gpt2):
    config, tensors = gpt2
    with pytest.raises(AttnlabError, match="the config has no 'n_embd'"):
        gpt_from_hf({k: v for k, v in config.items() if k != "n_embd"}, tensors)


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


LLAMA = {"model_type": "llama", "vocab_size": 11, "hidden_size": 16, "intermediate_size": 32,
         "num_hidden_layers": 1, "num_attention_heads": 2}


@pytest.mark.parametrize("attention_bias, mlp_bias", [(False, True), (True, None)])
def test_llama_biases_on_attention_or_mlp_alone_are_refused(attention_bias, mlp_bias):
    # None: an older config without the key, which transformers reads as mlp_bias=False
    config = {**LLAMA, "attention_bias": attention_bias,
              **({} if mlp_bias is None else {"mlp_bias": mlp_bias})}
    with pytest.raises(AttnlabError, match=f"attention_bias={attention_bias} with mlp_bias="
                                           f"{not attention_bias} is not supported"):
        gpt_from_hf(config, {})


def test_a_legacy_rope_scaling_beside_default_rope_parameters_is_refused():
    config = {**LLAMA, "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
              "rope_scaling": {"type": "linear", "factor": 4.0}}
    with pytest.raises(AttnlabError,
                       match=r"RoPE scaling 'linear' is not supported \(from rope_scaling\)"):
        gpt_from_hf(config, {})


def test_quantized_checkpoints_are_refused_not_cast(gpt2):
    config, tensors = gpt2
    with pytest.raises(AttnlabError, match=r"quantized .*bitsandbytes.*float weights only"):
        gpt_from_hf({**config, "quantization_config": {"quant_method": "bitsandbytes"}},
                    tensors)
    for dtype in (torch.int8, torch.float8_e4m3fn, torch.bool):  # no config says so
        name = "transformer.h.0.attn.c_attn.weight"
        q = {**tensors, name: tensors[name].to(dtype)}
        with pytest.raises(AttnlabError, match=f"'{name}' is {str(dtype)[6:]}: quantized"):
            gpt_from_hf(config, q)


def test_run_weights_of_another_dtype_kind_are_refused(tmp_path):
    from safetensors.torch import save_file

    from attnlab.models import GPT, GPTConfig
    from attnlab.train.checkpoint import load_model_weights

    model = GPT(GPTConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1, max_len=8))
    state = {k: v.clone() for k, v in model.state_dict().items() if k != "head.weight"}
    state["stack.blocks.0.ffn.fc1.weight"] = state["stack.blocks.0.ffn.fc1.weight"].to(
        torch.int8)
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(AttnlabError, match=r"'stack\.blocks\.0\.ffn\.fc1\.weight' is "
                                           r"torch\.int8, the model expects torch\.float32"):
        load_model_weights(model, tmp_path / "w.safetensors")
