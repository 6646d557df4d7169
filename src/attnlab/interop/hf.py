"""Hugging Face checkpoints -> attnlab models, from the two things an HF folder holds: the
config (a dict, as in config.json) and the tensors (as in model.safetensors).

`transformers` is not imported: the mapping is plain names and transposes, so a folder can be
loaded with nothing but safetensors. Supported decoder families:

- gpt2: learned positions, pre-norm LayerNorm, GELU (tanh), fused q|k|v in a Conv1D (stored
  (in, out), so transposed here), tied head.
- llama (also SmolLM2 and other LLaMA-shaped models): RoPE, RMSNorm, SwiGLU, grouped-query
  attention, no biases, tied or untied head.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.models import GPT, GPTConfig

SUPPORTED = ("gpt2", "llama")


def _take(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    if name not in tensors:
        raise AttnlabError(f"the checkpoint has no tensor '{name}'")
    t = tensors[name]
    if tuple(t.shape) != shape:
        raise AttnlabError(f"tensor '{name}' has shape {tuple(t.shape)}, the config implies "
                           f"{shape}")
    return t


def _rope_theta(config: dict) -> float:
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if params.get("rope_type", "default") not in ("default", None):
        raise AttnlabError(f"RoPE scaling '{params['rope_type']}' is not supported")
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def gpt2_config(config: dict) -> GPTConfig:
    return GPTConfig(vocab_size=config["vocab_size"], d_model=config["n_embd"],
                     n_heads=config["n_head"], n_layers=config["n_layer"],
                     d_ff=config.get("n_inner"),
                     max_len=config["n_positions"], positional="learned",
                     activation="gelu_tanh", norm="layernorm",
                     norm_eps=config.get("layer_norm_epsilon", 1e-5), norm_first=True,
                     final_norm=True, tie_embeddings=True)


def llama_config(config: dict) -> GPTConfig:
    d, heads = config["hidden_size"], config["num_attention_heads"]
    if config.get("head_dim", d // heads) != d // heads:
        raise AttnlabError(f"head_dim {config['head_dim']} != hidden_size / heads is not "
                           f"supported")
    if config.get("hidden_act", "silu") != "silu":
        raise AttnlabError(f"activation '{config['hidden_act']}' is not supported (silu only)")
    return GPTConfig(vocab_size=config["vocab_size"], d_model=d, n_heads=heads,
                     n_kv_heads=config.get("num_key_value_heads", heads),
                     n_layers=config["num_hidden_layers"], d_ff=config["intermediate_size"],
                     max_len=config.get("max_position_embeddings", 2048), positional="rope",
                     rope_theta=_rope_theta(config), activation="swiglu", norm="rmsnorm",
                     norm_eps=config.get("rms_norm_eps", 1e-6), norm_first=True, final_norm=True,
                     bias=bool(config.get("attention_bias", False)),
                     tie_embeddings=bool(config.get("tie_word_embeddings", False)))


def _gpt2_state(cfg: GPTConfig, t: dict[str, Tensor]) -> dict[str, Tensor]:
    d, f = cfg.d_model, cfg.ffn_dim
    out = {"tok_emb.weight": _take(t, "transformer.wte.weight", (cfg.vocab_size, d)),
           "positional.weight": _take(t, "transformer.wpe.weight", (cfg.max_len, d)),
           "stack.norm.weight": _take(t, "transformer.ln_f.weight", (d,)),
           "stack.norm.bias": _take(t, "transformer.ln_f.bias", (d,))}
    for i in range(cfg.n_layers):
        src, dst = f"transformer.h.{i}.", f"stack.blocks.{i}."
        qkv_w = _take(t, src + "attn.c_attn.weight", (d, 3 * d)).T  # Conv1D: (in, out)
        qkv_b = _take(t, src + "attn.c_attn.bias", (3 * d,))
        for name, w, b in zip("qkv", qkv_w.split(d), qkv_b.split(d), strict=True):
            out[f"{dst}self_attn.{name}_proj.weight"] = w
            out[f"{dst}self_attn.{name}_proj.bias"] = b
        for ours, theirs, shape in (("self_attn.out_proj", "attn.c_proj", (d, d)),
                                    ("ffn.fc1", "mlp.c_fc", (d, f)),
                                    ("ffn.fc2", "mlp.c_proj", (f, d))):
            out[f"{dst}{ours}.weight"] = _take(t, f"{src}{theirs}.weight", shape).T
            out[f"{dst}{ours}.bias"] = _take(t, f"{src}{theirs}.bias", (shape[1],))
        for ours, theirs in (("attn_norm", "ln_1"), ("ffn_norm", "ln_2")):
            out[f"{dst}{ours}.weight"] = _take(t, f"{src}{theirs}.weight", (d,))
            out[f"{dst}{ours}.bias"] = _take(t, f"{src}{theirs}.bias", (d,))
    return out


def _llama_state(cfg: GPTConfig, t: dict[str, Tensor]) -> dict[str, Tensor]:
    d, f, V = cfg.d_model, cfg.ffn_dim, cfg.vocab_size
    kv = (cfg.n_kv_heads or cfg.n_heads) * (d // cfg.n_heads)
    out = {"tok_emb.weight": _take(t, "model.embed_tokens.weight", (V, d)),
           "stack.norm.weight": _take(t, "model.norm.weight", (d,))}
    if not cfg.tie_embeddings:
        out["head.weight"] = _take(t, "lm_head.weight", (V, d))
    for i in range(cfg.n_layers):
        src, dst = f"model.layers.{i}.", f"stack.blocks.{i}."
        for ours, theirs, shape in (("self_attn.q_proj", "self_attn.q_proj", (d, d)),
                                    ("self_attn.k_proj", "self_attn.k_proj", (kv, d)),
                                    ("self_attn.v_proj", "self_attn.v_proj", (kv, d)),
                                    ("self_attn.out_proj", "self_attn.o_proj", (d, d)),
                                    ("ffn.fc1", "mlp.gate_proj", (f, d)),
                                    ("ffn.fc_up", "mlp.up_proj", (f, d)),
                                    ("ffn.fc2", "mlp.down_proj", (d, f))):
            out[f"{dst}{ours}.weight"] = _take(t, f"{src}{theirs}.weight", shape)
            if cfg.bias and not ours.startswith("ffn"):
                out[f"{dst}{ours}.bias"] = _take(t, f"{src}{theirs}.bias", (shape[0],))
        out[f"{dst}attn_norm.weight"] = _take(t, f"{src}input_layernorm.weight", (d,))
        out[f"{dst}ffn_norm.weight"] = _take(t, f"{src}post_attention_layernorm.weight", (d,))
    return out


def gpt_from_hf(config: dict, tensors: dict[str, Tensor]) -> GPT:
    """An attnlab `GPT` with the weights of a Hugging Face causal LM.

    Args:
        config: the HF config as a dict (config.json); `model_type` picks the mapping.
        tensors: the HF state dict (model.safetensors), any float dtype.
    """
    kind = config.get("model_type")
    if kind not in SUPPORTED:
        raise AttnlabError(f"model_type '{kind}' is not supported; supported: "
                           f"{', '.join(SUPPORTED)}")
    cfg = gpt2_config(config) if kind == "gpt2" else llama_config(config)
    state = (_gpt2_state if kind == "gpt2" else _llama_state)(cfg, tensors)
    model = GPT(cfg)
    expected = model.state_dict()
    if cfg.tie_embeddings:
        state.setdefault("head.weight", state["tok_emb.weight"])
    missing = sorted(set(expected) - set(state))
    if missing:
        raise AttnlabError(f"no mapping for attnlab tensors {missing[:3]}")
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model
