"""Hugging Face checkpoints <-> attnlab models, as the two things an HF folder holds: the config
(a dict, as in config.json) and the tensors (as in model.safetensors).

`transformers` is not imported: the mapping is plain names and transposes, so a folder can be
read and written with nothing but safetensors. Supported families (`model_type`):

- gpt2 -> `GPT`: learned positions, pre-norm LayerNorm, GELU (tanh), fused q|k|v in a Conv1D
  (stored (in, out), so transposed here), head tied to the embedding (or not).
- llama (also SmolLM2 and other LLaMA-shaped models) -> `GPT`: RoPE, RMSNorm, SwiGLU,
  grouped-query attention, biases optional, tied or untied head.
- bert -> `Encoder`: post-norm LayerNorm, an embedding LayerNorm, learned positions, token-type
  (segment) embeddings, GELU (erf), BERT's pooler (first token, dense + tanh).

Each family is one table of (attnlab names, HF name, transposed) entries that serves both
directions, so import and export cannot drift apart: `*_from_hf` builds the attnlab model from
the config and pulls each of its tensors out of the HF state dict by the table, `*_to_hf` pushes
them back under the HF names.

Not carried over, on purpose:
- dropout rates: HF and attnlab place dropout differently, so imported models have dropout 0
  (set `dropout` in the config to fine-tune); export writes `dropout` into the nearest fields.
- token ids (bos / eos / pad): attnlab models have no notion of them; export writes none.
- tensors attnlab has no use for: BERT's pretraining heads, `position_ids` buffers, GPT-2's
  cached causal masks. They are ignored on import.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from attnlab.attention import registry
from attnlab.errors import AttnlabError
from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig

GPT_FAMILIES = ("gpt2", "llama")
ENCODER_FAMILIES = ("bert",)
SUPPORTED = (*GPT_FAMILIES, *ENCODER_FAMILIES)

# HF `hidden_act` / `activation_function` names -> attnlab activations. "gelu_new" is GPT-2's
# tanh approximation written out by hand; it equals torch's approximate="tanh" to rounding.
_FROM_HF_ACT = {"gelu": "gelu", "gelu_python": "gelu", "gelu_new": "gelu_tanh",
                "gelu_pytorch_tanh": "gelu_tanh", "relu": "relu", "silu": "silu",
                "swish": "silu"}
# attnlab -> HF: the names whose HF implementation is the very torch function attnlab calls.
_TO_HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}


class Entry(NamedTuple):
    """One HF tensor and the attnlab tensor(s) it holds.

    Args:
        ours: attnlab state-dict names, concatenated along dim 0 when several (GPT-2's
            fused q|k|v projection).
        theirs: the HF state-dict name.
        transposed: HF stores the weight (in, out) (GPT-2's Conv1D); attnlab's nn.Linear is
            (out, in).
    """

    ours: tuple[str, ...]
    theirs: str
    transposed: bool = False


def _pair(ours: str, theirs: str, *, bias: bool = True, transposed: bool = False) -> list[Entry]:
    """Entries for a Linear or norm: its weight, and its bias when `bias`."""
    entries = [Entry((f"{ours}.weight",), f"{theirs}.weight", transposed)]
    if bias:
        entries.append(Entry((f"{ours}.bias",), f"{theirs}.bias"))
    return entries


def _prefix(tensors: dict[str, Tensor], probe: str, candidates: tuple[str, ...]) -> str:
    """The prefix under which a checkpoint keeps the base model (`transformer.` in a
    GPT2LMHeadModel file, none in a GPT2Model one); the first candidate when none matches, so
    the error names the usual tensor."""
    return next((p for p in candidates if p + probe in tensors), candidates[0])


# ---------------------------------------------------------------------------------------------
# Configs


def _get(config: dict, key: str):
    if key not in config:
        raise AttnlabError(f"the config has no '{key}'; is it a complete Hugging Face "
                           f"{config.get('model_type', '')} config.json?")
    return config[key]


def _activation(name: str) -> str:
    if name not in _FROM_HF_ACT:
        raise AttnlabError(f"activation '{name}' is not supported; supported: "
                           f"{', '.join(sorted(_FROM_HF_ACT))}")
    return _FROM_HF_ACT[name]


def _refuse_quantized(config: dict) -> None:
    """A quantized checkpoint's tensors are integers with scales beside them: casting them
    to float, as a float checkpoint's are, would give garbage weights."""
    q = config.get("quantization_config")
    if q:
        method = q.get("quant_method", "?") if isinstance(q, dict) else "?"
        raise AttnlabError(f"the checkpoint is quantized (quantization_config: {method}); "
                           f"attnlab reads float weights only")


def _refuse(config: dict, key: str, default, why: str) -> None:
    """A setting attnlab does not implement must keep its default, or the load is refused."""
    if config.get(key, default) != default:
        raise AttnlabError(f"{key}={config[key]!r} is not supported ({why})")


def _rope_theta(config: dict) -> float:
    # Both keys are read (transformers honours a legacy `rope_scaling` beside a default
    # `rope_parameters`), so that neither can hide a scaling attnlab does not apply.
    for key in ("rope_parameters", "rope_scaling"):
        part = config.get(key) or {}
        kind = part.get("rope_type", part.get("type"))
        if kind not in ("default", None):
            raise AttnlabError(f"RoPE scaling '{kind}' is not supported (from {key})")
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    return float(params.get("rope_theta", config.get("rope_theta", 10000.0)))


def gpt2_config(config: dict) -> GPTConfig:
    """The attnlab `GPTConfig` of an HF GPT-2 config dict."""
    _refuse(config, "scale_attn_weights", True, "attnlab always scales scores by 1/sqrt(d_head)")
    _refuse(config, "scale_attn_by_inverse_layer_idx", False, "no per-layer score scaling")
    _refuse(config, "add_cross_attention", False, "a decoder-only model")
    return GPTConfig(vocab_size=_get(config, "vocab_size"), d_model=_get(config, "n_embd"),
                     n_heads=_get(config, "n_head"), n_layers=_get(config, "n_layer"),
                     d_ff=config.get("n_inner"), max_len=_get(config, "n_positions"),
                     positional="learned",
                     activation=_activation(config.get("activation_function", "gelu_new")),
                     norm="layernorm", norm_eps=config.get("layer_norm_epsilon", 1e-5),
                     norm_first=True, final_norm=True,
                     tie_embeddings=bool(config.get("tie_word_embeddings", True)))


def llama_config(config: dict) -> GPTConfig:
    """The attnlab `GPTConfig` of an HF LLaMA-style config dict."""
    d, heads = _get(config, "hidden_size"), _get(config, "num_attention_heads")
    if config.get("head_dim") not in (None, d // heads):
        raise AttnlabError(f"head_dim {config['head_dim']} != hidden_size / heads is not "
                           f"supported")
    if config.get("hidden_act", "silu") != "silu":
        raise AttnlabError(f"activation '{config['hidden_act']}' is not supported (silu only)")
    bias = bool(config.get("attention_bias", False))
    # attnlab's `bias` switches the biases of attention and MLP together; transformers'
    # default for a missing mlp_bias is False
    if bool(config.get("mlp_bias", False)) != bias:
        raise AttnlabError(f"attention_bias={bias} with mlp_bias="
                           f"{bool(config.get('mlp_bias', False))} is not supported (attnlab's "
                           f"`bias` puts biases on both attention and MLP, or on neither)")
    kv = config.get("num_key_value_heads") or heads
    return GPTConfig(vocab_size=_get(config, "vocab_size"), d_model=d, n_heads=heads,
                     n_kv_heads=kv if kv != heads else None,
                     n_layers=_get(config, "num_hidden_layers"),
                     d_ff=_get(config, "intermediate_size"),
                     max_len=config.get("max_position_embeddings", 2048), positional="rope",
                     rope_theta=_rope_theta(config), activation="swiglu", norm="rmsnorm",
                     norm_eps=config.get("rms_norm_eps", 1e-6), norm_first=True, final_norm=True,
                     bias=bias, tie_embeddings=bool(config.get("tie_word_embeddings", False)))


def bert_config(config: dict, *, pooling: str = "cls") -> EncoderConfig:
    """The attnlab `EncoderConfig` of an HF BERT config dict.

    Args:
        config: the HF config.
        pooling: "cls" (BERT's pooler) or "mean" (no pooler weights: sentence-transformers).
    """
    _refuse(config, "position_embedding_type", "absolute", "learned absolute positions only")
    _refuse(config, "is_decoder", False, "an encoder: bidirectional attention only")
    _refuse(config, "add_cross_attention", False, "an encoder without cross-attention")
    return EncoderConfig(vocab_size=_get(config, "vocab_size"),
                         d_model=_get(config, "hidden_size"),
                         n_heads=_get(config, "num_attention_heads"),
                         n_layers=_get(config, "num_hidden_layers"),
                         d_ff=_get(config, "intermediate_size"),
                         max_len=config.get("max_position_embeddings", 512),
                         positional="learned",
                         activation=_activation(config.get("hidden_act", "gelu")),
                         norm="layernorm", norm_eps=config.get("layer_norm_eps", 1e-12),
                         norm_first=False, final_norm=False, bias=True,
                         type_vocab_size=config.get("type_vocab_size", 2), embed_norm=True,
                         pooling=pooling)


def _check_exportable_attention(cfg) -> None:
    if not registry.get(cfg.attention).capabilities.exact:
        raise AttnlabError(f"attention '{cfg.attention}' is not softmax attention over every "
                           f"key, so a Hugging Face model would compute another function; "
                           f"export needs an exact mechanism (full, flash)")
    if cfg.attention_options.get("scale") is not None:
        raise AttnlabError("attention_options.scale is set; Hugging Face models scale scores by "
                           "1/sqrt(d_head) only")
    if cfg.reversible:
        raise AttnlabError("reversible=True layers compute another function than the plain "
                           "stack Hugging Face models have; they cannot be exported")


def _gpt_family(cfg: GPTConfig) -> str:
    """gpt2 or llama: the HF family whose computation equals this GPT's."""
    _check_exportable_attention(cfg)
    pre_norm = cfg.norm_first and cfg.use_final_norm
    if (pre_norm and cfg.positional == "learned" and cfg.norm == "layernorm" and cfg.bias
            and cfg.activation in _TO_HF_ACT and cfg.n_kv_heads in (None, cfg.n_heads)):
        return "gpt2"
    if pre_norm and cfg.positional == "rope" and cfg.norm == "rmsnorm" and (
            cfg.activation == "swiglu"):
        return "llama"
    raise AttnlabError(
        f"this GPT (positional {cfg.positional}, norm {cfg.norm}, activation {cfg.activation}, "
        f"norm_first={cfg.norm_first}, bias={cfg.bias}) has no Hugging Face counterpart; "
        f"GPT-2 needs learned positions, pre-norm LayerNorm with biases and one head per "
        f"key/value, LLaMA needs RoPE, pre-norm RMSNorm and SwiGLU")


def _gpt2_hf_config(cfg: GPTConfig) -> dict:
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
            "vocab_size": cfg.vocab_size, "n_positions": cfg.max_len, "n_embd": cfg.d_model,
            "n_layer": cfg.n_layers, "n_head": cfg.n_heads, "n_inner": cfg.d_ff,
            "activation_function": _TO_HF_ACT[cfg.activation],
            "layer_norm_epsilon": cfg.norm_eps, "tie_word_embeddings": cfg.tie_embeddings,
            "resid_pdrop": cfg.dropout, "embd_pdrop": cfg.dropout,
            "attn_pdrop": cfg.attention_options.get("dropout", 0.0),
            "scale_attn_weights": True, "bos_token_id": None, "eos_token_id": None,
            "dtype": "float32"}


def _llama_hf_config(cfg: GPTConfig) -> dict:
    # rope_theta is written both ways: top-level for transformers 4, rope_parameters for 5
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
            "intermediate_size": cfg.ffn_dim, "num_hidden_layers": cfg.n_layers,
            "num_attention_heads": cfg.n_heads,
            "num_key_value_heads": cfg.n_kv_heads or cfg.n_heads,
            "head_dim": cfg.d_model // cfg.n_heads, "max_position_embeddings": cfg.max_len,
            "hidden_act": "silu", "rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
            "attention_bias": cfg.bias, "mlp_bias": cfg.bias,
            "attention_dropout": cfg.attention_options.get("dropout", 0.0),
            "tie_word_embeddings": cfg.tie_embeddings, "bos_token_id": None,
            "eos_token_id": None, "dtype": "float32"}


def _bert_hf_config(cfg: EncoderConfig) -> dict:
    _check_exportable_attention(cfg)
    bert_shaped = (not cfg.norm_first and not cfg.use_final_norm and cfg.embed_norm
                   and cfg.positional == "learned" and cfg.norm == "layernorm" and cfg.bias
                   and cfg.activation in _TO_HF_ACT and cfg.n_kv_heads in (None, cfg.n_heads))
    if not bert_shaped:
        raise AttnlabError(
            f"this encoder (norm_first={cfg.norm_first}, embed_norm={cfg.embed_norm}, "
            f"positional {cfg.positional}, norm {cfg.norm}, activation {cfg.activation}) is not "
            f"BERT-shaped; BertModel needs post-norm LayerNorm with biases, an embedding "
            f"LayerNorm, learned positions and no final norm")
    if cfg.num_classes:
        raise AttnlabError(f"the classifier head ({cfg.num_classes} classes) has no place in a "
                           f"BertModel; export the encoder alone after reset_head(0)")
    return {"model_type": "bert", "architectures": ["BertModel"],
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.d_model,
            "num_hidden_layers": cfg.n_layers, "num_attention_heads": cfg.n_heads,
            "intermediate_size": cfg.ffn_dim, "hidden_act": _TO_HF_ACT[cfg.activation],
            "hidden_dropout_prob": cfg.dropout,
            "attention_probs_dropout_prob": cfg.attention_options.get("dropout", 0.0),
            "max_position_embeddings": cfg.max_len,
            # BertModel always has token types; one type whose embedding is zero adds nothing
            "type_vocab_size": max(cfg.type_vocab_size, 1), "layer_norm_eps": cfg.norm_eps,
            "position_embedding_type": "absolute", "dtype": "float32"}


# ---------------------------------------------------------------------------------------------
# Tensor tables


def _gpt2_table(cfg: GPTConfig, p: str = "transformer.") -> list[Entry]:
    table = [Entry(("tok_emb.weight",), f"{p}wte.weight"),
             Entry(("positional.weight",), f"{p}wpe.weight"), *_pair("stack.norm", f"{p}ln_f")]
    if not cfg.tie_embeddings:
        table.append(Entry(("head.weight",), "lm_head.weight"))
    for i in range(cfg.n_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}h.{i}."
        qkv = [f"{ours}self_attn.{name}_proj" for name in "qkv"]
        table += [Entry(tuple(f"{n}.weight" for n in qkv), f"{theirs}attn.c_attn.weight", True),
                  Entry(tuple(f"{n}.bias" for n in qkv), f"{theirs}attn.c_attn.bias")]
        for a, b in (("self_attn.out_proj", "attn.c_proj"), ("ffn.fc1", "mlp.c_fc"),
                     ("ffn.fc2", "mlp.c_proj")):
            table += _pair(ours + a, theirs + b, transposed=True)
        table += _pair(f"{ours}attn_norm", f"{theirs}ln_1") + _pair(f"{ours}ffn_norm",
                                                                     f"{theirs}ln_2")
    return table


def _llama_table(cfg: GPTConfig, p: str = "model.") -> list[Entry]:
    table = [Entry(("tok_emb.weight",), f"{p}embed_tokens.weight"),
             Entry(("stack.norm.weight",), f"{p}norm.weight")]
    if not cfg.tie_embeddings:
        table.append(Entry(("head.weight",), "lm_head.weight"))
    for i in range(cfg.n_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}layers.{i}."
        for a, b in (("self_attn.q_proj", "self_attn.q_proj"),
                     ("self_attn.k_proj", "self_attn.k_proj"),
                     ("self_attn.v_proj", "self_attn.v_proj"),
                     ("self_attn.out_proj", "self_attn.o_proj"), ("ffn.fc1", "mlp.gate_proj"),
                     ("ffn.fc_up", "mlp.up_proj"), ("ffn.fc2", "mlp.down_proj")):
            table += _pair(ours + a, theirs + b, bias=cfg.bias)
        table += (_pair(f"{ours}attn_norm", f"{theirs}input_layernorm", bias=False)
                  + _pair(f"{ours}ffn_norm", f"{theirs}post_attention_layernorm", bias=False))
    return table


def _bert_table(cfg: EncoderConfig, p: str = "") -> list[Entry]:
    table = [Entry(("tok_emb.weight",), f"{p}embeddings.word_embeddings.weight"),
             Entry(("positional.weight",), f"{p}embeddings.position_embeddings.weight"),
             *_pair("embed_norm", f"{p}embeddings.LayerNorm")]
    if cfg.type_vocab_size:
        table.append(Entry(("type_emb.weight",), f"{p}embeddings.token_type_embeddings.weight"))
    for i in range(cfg.n_layers):
        ours, theirs = f"stack.blocks.{i}.", f"{p}encoder.layer.{i}."
        for a, b in (("self_attn.q_proj", "attention.self.query"),
                     ("self_attn.k_proj", "attention.self.key"),
                     ("self_attn.v_proj", "attention.self.value"),
                     ("self_attn.out_proj", "attention.output.dense"),
                     ("attn_norm", "attention.output.LayerNorm"),
                     ("ffn.fc1", "intermediate.dense"), ("ffn.fc2", "output.dense"),
                     ("ffn_norm", "output.LayerNorm")):
            table += _pair(ours + a, theirs + b)
    if cfg.pooling == "cls":
        table += _pair("pooler.dense", f"{p}pooler.dense")
    return table


# ---------------------------------------------------------------------------------------------
# Moving tensors by a table


def _take(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    if name not in tensors:
        raise AttnlabError(f"the checkpoint has no tensor '{name}'")
    t = tensors[name]
    if not t.is_floating_point() or t.element_size() < 2:  # int8, fp8, bool: scaled elsewhere
        raise AttnlabError(f"tensor '{name}' is {str(t.dtype).removeprefix('torch.')}: "
                           f"quantized weights are not supported; give float16, bfloat16 or "
                           f"float32 weights")
    if tuple(t.shape) != tuple(shape):
        raise AttnlabError(f"tensor '{name}' has shape {tuple(t.shape)}, the config implies "
                           f"{tuple(shape)}")
    return t


def _load(model: nn.Module, table: list[Entry], tensors: dict[str, Tensor]) -> None:
    """Fill `model` from HF `tensors` by `table`; every tensor of the model must be covered."""
    expected = model.state_dict()
    state: dict[str, Tensor] = {}
    for e in table:
        sizes = [expected[n].shape[0] for n in e.ours]
        shape = (sum(sizes), *expected[e.ours[0]].shape[1:])
        t = _take(tensors, e.theirs, shape[::-1] if e.transposed else shape)
        state.update(zip(e.ours, (t.T if e.transposed else t).split(sizes), strict=True))
    if getattr(model.config, "tie_embeddings", False):
        state["head.weight"] = state["tok_emb.weight"]  # one tensor under two names
    missing = sorted(set(expected) - set(state))
    if missing:  # a gap in a table, not a user error; said plainly all the same
        raise AttnlabError(f"no mapping for attnlab tensors {missing[:3]}")
    with torch.no_grad():
        model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})


def _dump(model: nn.Module, table: list[Entry]) -> dict[str, Tensor]:
    """The HF tensors of `model` by `table`: fresh contiguous copies, as safetensors wants."""
    # ff_chunks wraps each FFN in a ChunkedFeedForward: same weights, one level deeper
    ours = {k.replace(".ffn.ffn.", ".ffn."): v.detach() for k, v in model.state_dict().items()}
    out: dict[str, Tensor] = {}
    for e in table:
        t = torch.cat([ours[n] for n in e.ours]) if len(e.ours) > 1 else ours[e.ours[0]]
        out[e.theirs] = (t.T if e.transposed else t).contiguous().clone()
    covered = {n for e in table for n in e.ours}
    if getattr(model.config, "tie_embeddings", False):
        covered.add("head.weight")  # HF re-ties lm_head to the embedding on load
    left = sorted(set(ours) - covered)
    if left:
        raise AttnlabError(f"no Hugging Face name for attnlab tensors {left[:3]}")
    return out


# ---------------------------------------------------------------------------------------------
# Public API


def gpt_from_hf(config: dict, tensors: dict[str, Tensor]) -> GPT:
    """An attnlab `GPT` with the weights of a Hugging Face causal LM (GPT-2 or LLaMA-style).

    Args:
        config: the HF config as a dict (config.json); `model_type` picks the mapping.
        tensors: the HF state dict (model.safetensors), any float dtype; extra tensors (heads
            attnlab does not have, buffers) are ignored.

    Returns:
        The model (in training mode, as a fresh nn.Module; call `.eval()` for inference).
    """
    kind = config.get("model_type")
    _refuse_quantized(config)
    if kind not in GPT_FAMILIES:
        hint = " (an encoder: use encoder_from_hf)" if kind in ENCODER_FAMILIES else ""
        raise AttnlabError(f"model_type '{kind}' is not a supported causal LM{hint}; "
                           f"supported: {', '.join(GPT_FAMILIES)}")
    if kind == "gpt2":
        cfg = gpt2_config(config)
        table = _gpt2_table(cfg, _prefix(tensors, "wte.weight", ("transformer.", "")))
    else:
        cfg = llama_config(config)
        table = _llama_table(cfg, _prefix(tensors, "embed_tokens.weight", ("model.", "")))
    model = GPT(cfg)
    _load(model, table, tensors)
    return model


def encoder_from_hf(config: dict, tensors: dict[str, Tensor], *,
                    pooling: str | None = None) -> Encoder:
    """An attnlab `Encoder` with the weights of a Hugging Face BERT (BertModel format, or with
    the `bert.` prefix of BertFor* checkpoints, whose task heads are ignored).

    Args:
        config: the HF config as a dict (config.json).
        tensors: the HF state dict (model.safetensors), any float dtype.
        pooling: "cls" (BERT's pooler: dense + tanh on the first token) or "mean" (over real
            tokens, no weights). Default: "cls" when the checkpoint has pooler weights, else
            "mean".

    Returns:
        The model (in training mode; call `.eval()` for inference).
    """
    kind = config.get("model_type")
    _refuse_quantized(config)
    if kind not in ENCODER_FAMILIES:
        hint = " (a causal LM: use gpt_from_hf)" if kind in GPT_FAMILIES else ""
        raise AttnlabError(f"model_type '{kind}' is not a supported encoder{hint}; "
                           f"supported: {', '.join(ENCODER_FAMILIES)}")
    p = _prefix(tensors, "embeddings.word_embeddings.weight", ("", "bert."))
    if pooling is None:
        pooling = "cls" if f"{p}pooler.dense.weight" in tensors else "mean"
    cfg = bert_config(config, pooling=pooling)
    model = Encoder(cfg)
    _load(model, _bert_table(cfg, p), tensors)
    return model


def model_from_hf(config: dict, tensors: dict[str, Tensor]) -> GPT | Encoder:
    """`gpt_from_hf` or `encoder_from_hf`, by the config's `model_type`.

    Args:
        config: the HF config as a dict.
        tensors: the HF state dict.
    """
    kind = config.get("model_type")
    if kind in ENCODER_FAMILIES:
        return encoder_from_hf(config, tensors)
    if kind in GPT_FAMILIES:
        return gpt_from_hf(config, tensors)
    raise AttnlabError(f"model_type '{kind}' is not supported; supported: "
                       f"{', '.join(SUPPORTED)}")


def gpt_to_hf(model: GPT) -> tuple[dict, dict[str, Tensor]]:
    """The Hugging Face (config, state dict) of an attnlab `GPT`: GPT2LMHeadModel when it is
    GPT-2-shaped, LlamaForCausalLM when LLaMA-shaped; anything else is refused.

    A tied head is not written (HF ties `lm_head` to the embedding on load, as its own
    `save_pretrained` does). `ff_chunks` is a training option and is dropped.

    Args:
        model: the GPT; its weights are copied, not shared.

    Returns:
        (config dict for config.json, tensors for model.safetensors).
    """
    if not isinstance(model, GPT):
        raise AttnlabError(f"gpt_to_hf needs a GPT, got {type(model).__name__}")
    cfg = model.config
    if _gpt_family(cfg) == "gpt2":
        return _gpt2_hf_config(cfg), _dump(model, _gpt2_table(cfg))
    return _llama_hf_config(cfg), _dump(model, _llama_table(cfg))


def encoder_to_hf(model: Encoder) -> tuple[dict, dict[str, Tensor]]:
    """The Hugging Face BertModel (config, state dict) of a BERT-shaped attnlab `Encoder`.

    Departures: with `pooling="mean"` no pooler is written (HF then initializes one at random
    and its `pooler_output` means nothing; the hidden states are exact); with
    `type_vocab_size=0` one token type with a zero embedding is written, which adds nothing.

    Args:
        model: the encoder; post-norm, embedding LayerNorm, learned positions, no classifier.

    Returns:
        (config dict for config.json, tensors for model.safetensors).
    """
    if not isinstance(model, Encoder):
        raise AttnlabError(f"encoder_to_hf needs an Encoder, got {type(model).__name__}")
    cfg = model.config
    config = _bert_hf_config(cfg)
    tensors = _dump(model, _bert_table(cfg))
    if not cfg.type_vocab_size:
        tensors["embeddings.token_type_embeddings.weight"] = torch.zeros(1, cfg.d_model)
    return config, tensors


def model_to_hf(model: GPT | Encoder) -> tuple[dict, dict[str, Tensor]]:
    """`gpt_to_hf` or `encoder_to_hf`, by the model's class.

    Args:
        model: an attnlab GPT or Encoder.
    """
    if isinstance(model, Encoder):
        return encoder_to_hf(model)
    if isinstance(model, GPT):
        return gpt_to_hf(model)
    raise AttnlabError(f"{type(model).__name__} has no Hugging Face export; GPT and Encoder do")
