"""Tiny random models on both sides, built offline, with weights of a useful scale.

Default initializations (N(0, 0.02)) make attention nearly uniform and hidden states tiny, so a
wrong mask, position or head grouping would hide under the tolerance. `scale_` redraws every
parameter of a model (Hugging Face or attnlab) at a scale where such a bug moves the outputs by
far more than 1e-4.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig

V, D, H, L, N_POS = 97, 64, 4, 2, 32
ATOL = RTOL = 1e-4


@torch.no_grad()
def scale_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Embeddings ~ N(0, 1), matrices ~ N(0, 1.5 / fan_in), norm scales ~ 1 +- 0.2, other
    vectors (biases) ~ N(0, 0.1). Tied parameters are drawn once."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # named_parameters lists a tied tensor once
        low = name.lower()
        if "emb" in low or "wte" in low or "wpe" in low or "positional" in low:
            p.copy_(torch.randn(p.shape, generator=g))
        elif "norm" in low or ".ln_" in low:
            noise = torch.randn(p.shape, generator=g)
            p.copy_(1.0 + 0.2 * noise if name.endswith("weight") else 0.1 * noise)
        elif p.dim() == 2:
            fan_in = p.shape[0] if ".c_" in name else p.shape[1]  # GPT-2's Conv1D is (in, out)
            p.copy_(torch.randn(p.shape, generator=g) * (1.5 / fan_in) ** 0.5)
        else:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


def _eager(cfg):
    cfg._attn_implementation = "eager"  # the reference computation, no fused kernel
    return cfg


def hf_gpt2(*, tie: bool = True, activation: str = "gelu_new", vocab: int = V):
    cfg = GPT2Config(vocab_size=vocab, n_positions=N_POS, n_embd=D, n_layer=L, n_head=H,
                     activation_function=activation, resid_pdrop=0.0, embd_pdrop=0.0,
                     attn_pdrop=0.0, layer_norm_epsilon=1e-3, bos_token_id=None,
                     eos_token_id=None, tie_word_embeddings=tie)
    return scale_(GPT2LMHeadModel(_eager(cfg))).eval()


def hf_llama(*, tie: bool = False, n_kv: int = 2, bias: bool = False, vocab: int = V):
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=D, intermediate_size=96, num_hidden_layers=L,
                      num_attention_heads=H, num_key_value_heads=n_kv,
                      max_position_embeddings=N_POS, rms_norm_eps=1e-3,
                      rope_parameters={"rope_type": "default", "rope_theta": 500.0},
                      attention_bias=bias, mlp_bias=bias, tie_word_embeddings=tie,
                      bos_token_id=None, eos_token_id=None, pad_token_id=None)
    return scale_(LlamaForCausalLM(_eager(cfg))).eval()


def hf_bert(*, act: str = "gelu", types: int = 2, pooler: bool = True, vocab: int = V):
    cfg = BertConfig(vocab_size=vocab, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                     intermediate_size=96, hidden_act=act, max_position_embeddings=N_POS,
                     type_vocab_size=types, layer_norm_eps=1e-3, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return scale_(BertModel(_eager(cfg), add_pooling_layer=pooler)).eval()


def gpt2_shaped(**kw) -> GPT:
    """An attnlab GPT that is GPT-2 shaped (exportable as GPT2LMHeadModel)."""
    cfg = dict(vocab_size=V, d_model=D, n_heads=H, n_layers=L, max_len=N_POS,
               positional="learned", activation="gelu_tanh", norm="layernorm", norm_eps=1e-3,
               norm_first=True, final_norm=True, tie_embeddings=True)
    return scale_(GPT(GPTConfig(**{**cfg, **kw}))).eval()


def llama_shaped(**kw) -> GPT:
    """An attnlab GPT that is LLaMA shaped (exportable as LlamaForCausalLM)."""
    cfg = dict(vocab_size=V, d_model=D, n_heads=H, n_kv_heads=2, n_layers=L, d_ff=96,
               max_len=N_POS, positional="rope", rope_theta=500.0, activation="swiglu",
               norm="rmsnorm", norm_eps=1e-3, final_norm=True, bias=False,
               tie_embeddings=False)
    return scale_(GPT(GPTConfig(**{**cfg, **kw}))).eval()


def bert_shaped(**kw) -> Encoder:
    """An attnlab Encoder that is BERT shaped (exportable as BertModel)."""
    cfg = dict(vocab_size=V, d_model=D, n_heads=H, n_layers=L, d_ff=96, max_len=N_POS,
               positional="learned", activation="gelu", norm="layernorm", norm_eps=1e-3,
               norm_first=False, final_norm=False, type_vocab_size=2, embed_norm=True,
               pooling="cls")
    return scale_(Encoder(EncoderConfig(**{**cfg, **kw}))).eval()


def padded(B_lengths: list[int], T: int, seed: int, vocab: int = V):
    """Right-padded random ids (B, T) with pad id 0 and the keep mask (True = real)."""
    idx = torch.randint(vocab, (len(B_lengths), T), generator=torch.Generator().manual_seed(seed))
    keep = torch.arange(T)[None, :] < torch.tensor(B_lengths)[:, None]
    return idx.masked_fill(~keep, 0), keep
