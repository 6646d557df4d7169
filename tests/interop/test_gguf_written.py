"""A tiny GGUF file written here the way llama.cpp's converter writes one (q and k rows permuted
for its pairwise RoPE, grouped-query heads, fp32 tensors, a byte-level BPE vocabulary with a
control eos token), from a random transformers LlamaForCausalLM: attnlab must read back that
model's logits and the file's eos id, without the 93 MB download the SmolLM2 tests need."""

import gguf
import numpy as np
import pytest
import torch
from tokenizers import pre_tokenizers

from attnlab.interop import load_pretrained
from tests.interop.tiny import ATOL, RTOL, hf_llama

_HF_TO_GGUF = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
               "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def write_gguf(path, hf, tokens, merges, types, eos):
    c = hf.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(c.rope_parameters["rope_theta"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_merges(merges)
    w.add_token_types(types)
    w.add_eos_token_id(eos)
    for name, t in hf.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue  # a tied head is the embedding: llama.cpp writes no output.weight
        a = t.detach().float().numpy().copy()
        if name == "model.embed_tokens.weight":
            out = "token_embd.weight"
        elif name == "model.norm.weight":
            out = "output_norm.weight"
        elif name == "lm_head.weight":
            out = "output.weight"
        else:
            _, _, i, *rest = name.split(".")
            part = ".".join(rest[:-1])
            out = f"blk.{i}.{_HF_TO_GGUF[part]}.{rest[-1]}"
            if part == "self_attn.q_proj":
                a = permute(a, c.num_attention_heads)
            elif part == "self_attn.k_proj":
                a = permute(a, c.num_key_value_heads)
        w.add_tensor(out, a)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("tie", [False, True], ids=["untied", "tied"])
def test_a_llama_cpp_style_file_gives_the_transformers_logits_and_eos(tmp_path, tie):
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*alphabet, "ab", "<|end|>"]
    types = [1] * (len(tokens) - 1) + [3]  # the eos is a control token
    eos = len(tokens) - 1
    hf = hf_llama(tie=tie, vocab=len(tokens))
    path = tmp_path / "tiny.gguf"
    write_gguf(path, hf, tokens, ["a b"], types, eos)
    model, tokenizer = load_pretrained(path)
    c = model.config
    assert (c.n_heads, c.n_kv_heads, c.tie_embeddings) == (4, 2, tie)
    assert tokenizer.eos_ids == (eos,)
    assert tokenizer.encode("ab<|end|>") == [tokens.index("ab"), eos]
    idx = torch.randint(len(tokens), (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=ATOL, rtol=RTOL)
