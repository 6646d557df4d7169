"""A key missing from a Hugging Face config.json means transformers' default for it, so the
attnlab config read from a config without its optional keys must equal the one read from the
same config with every key written out by transformers (older and hand-written config.json
files often leave out norm epsilons, rope_theta, tie_word_embeddings, ...)."""

import pytest
from transformers import BertConfig, GPT2Config, LlamaConfig

from attnlab.interop.hf import bert_config, gpt2_config, llama_config

# transformers' own defaults for everything optional; only the sizes are set
FAMILIES = {
    "gpt2": (gpt2_config, lambda: GPT2Config(vocab_size=97, n_positions=32, n_embd=64,
                                             n_layer=2, n_head=4),
             ("layer_norm_epsilon", "activation_function", "n_inner", "tie_word_embeddings",
              "scale_attn_weights", "scale_attn_by_inverse_layer_idx", "add_cross_attention")),
    "llama": (llama_config, lambda: LlamaConfig(vocab_size=97, hidden_size=64,
                                                intermediate_size=96, num_hidden_layers=2,
                                                num_attention_heads=4),
              ("rms_norm_eps", "tie_word_embeddings", "rope_theta", "rope_parameters",
               "rope_scaling", "max_position_embeddings", "num_key_value_heads", "hidden_act",
               "attention_bias", "mlp_bias", "head_dim")),
    "bert": (bert_config, lambda: BertConfig(vocab_size=97, hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=96),
             ("layer_norm_eps", "type_vocab_size", "hidden_act", "max_position_embeddings",
              "position_embedding_type", "is_decoder", "add_cross_attention")),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_a_missing_optional_key_means_the_transformers_default(family):
    read, make, optional = FAMILIES[family]
    full = make().to_dict()
    want = read(full)
    for key in optional:
        if key not in full:
            continue
        trimmed = {k: v for k, v in full.items() if k != key}
        assert read(trimmed) == want, f"{family}: without '{key}'"
    trimmed = {k: v for k, v in full.items() if k not in optional}
    assert read(trimmed) == want, f"{family}: without every optional key"


def test_a_llama_head_dim_other_than_hidden_over_heads_is_refused_by_name():
    """(Qwen3-, Gemma-like configs) q/k/v then have another width than attnlab's heads."""
    from attnlab.errors import AttnlabError

    config = FAMILIES["llama"][1]().to_dict()
    with pytest.raises(AttnlabError, match="head_dim 32"):
        llama_config({**config, "head_dim": 32})
