"""GGUF files (llama.cpp's single-file format) -> attnlab models, by way of the Hugging Face
mapping in `attnlab.interop.hf`.

A GGUF file holds everything in one place: the model's settings as `ARCH.*` metadata keys, the
tokenizer as `tokenizer.ggml.*` keys (vocabulary, merges, token types, special ids), the chat
template as `tokenizer.chat_template`, and the tensors under llama.cpp's names, most of them
quantized in blocks (Q4_1, Q8_0, ...). Reading it takes four steps, each a small function here:

1. `gguf.GGUFReader` (the reference reader, published with llama.cpp) parses the file and
   `gguf.quants.dequantize` turns every tensor into fp32. attnlab computes in fp32, so the model
   holds the quantized values exactly, but not the original unquantized weights.
2. The `llama.*` metadata become a Hugging Face LLaMA config dict (`hf_config`), the tensors
   get their HF names (`hf_tensors`), and `model_from_hf` builds the `GPT` as for an HF folder.
   llama.cpp's converter permutes the rows of the q and k projections so that its RoPE, which
   rotates adjacent pairs (x0, x1), (x2, x3), ..., computes what HF's rotate-half RoPE computes
   on the original rows; the permutation is undone here, exactly as `transformers`' own GGUF
   loader undoes it.
3. The tokenizer is rebuilt from the metadata with `tokenizers` (`gguf_tokenizer`): byte-level
   BPE (`tokenizer.ggml.model` "gpt2") with the pre-tokenizer llama.cpp picks for the file's
   `tokenizer.ggml.pre`, control tokens kept whole. `transformers` can convert too, but it is a
   test dependency only, so the few lines are written here and the tests hold the two equal.
4. The chat template and the bos/eos tokens become a `ChatTemplate` carried by the tokenizer
   (a `ChatTokenizer`); `attnlab generate --chat` renders it with a sandboxed Jinja2
   environment, as `transformers` does. (`ChatTokenizer` serves HF folders with a
   tokenizer_config.json chat template too; it lives here because GGUF brought it.)

Supported: `general.architecture` "llama" (LLaMA, SmolLM2, and the other LLaMA-shaped models)
with a byte-level BPE vocabulary. Anything else is refused with one line that says what.
A file is only ever parsed, never executed or unpickled.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from torch import Tensor

from attnlab.errors import AttnlabError
from attnlab.interop.hf import model_from_hf
from attnlab.interop.tokenizer import HFTokenizer, token_ids
from attnlab.models import GPT

MAGIC = b"GGUF"

#: llama.cpp tensor names (after `blk.N.`) -> LLaMA names in transformers (after
#: `model.layers.N.`).
_BLOCK_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
                "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
                "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
                "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm",
              "output": "lm_head"}

# llama.cpp's `tokenizer.ggml.pre` -> how it splits text before BPE. "gpt2" and "default" use
# GPT-2's regex (ByteLevel's own); SmolLM2 and StarCoder first cut every digit apart, as their
# Hugging Face tokenizer.json does with a Digits(individual_digits=True) pre-tokenizer.
_DIGIT_SPLIT_PRE = ("smollm", "starcoder", "refact")
_PLAIN_PRE = ("gpt2", "default", None)


# ---------------------------------------------------------------------------------------------
# Reading the file


def read_gguf(path: str | Path):
    """The parsed file, a `gguf.GGUFReader` (memory-mapped: tensors are read when used).

    Args:
        path: a .gguf file.
    """
    import gguf  # imported here: only GGUF users pay for it

    path = Path(path).expanduser()
    if not path.is_file():
        raise AttnlabError(f"no such GGUF file: {path}")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != MAGIC:
        raise AttnlabError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF')")
    try:
        return gguf.GGUFReader(path)
    except Exception as e:  # the reader raises ValueError, IndexError, ... on damaged files
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise AttnlabError(f"{path} is not a readable GGUF file ({first}); it may be truncated "
                           f"or corrupt") from None


def gguf_metadata(reader) -> dict:
    """Every metadata key of the file with its value (strings, numbers, lists).

    Args:
        reader: from `read_gguf`.
    """
    meta = {}
    for name, field in reader.fields.items():
        try:
            meta[name] = field.contents()
        except Exception as e:  # a damaged value: say which key
            raise AttnlabError(f"GGUF metadata '{name}' is unreadable ({e}); the file may be "
                               f"corrupt") from None
    return meta


# ---------------------------------------------------------------------------------------------
# Config and tensors, as Hugging Face names them


def hf_config(meta: dict, tensor_names: set[str]) -> dict:
    """The Hugging Face LLaMA config dict the file's metadata describe.

    Args:
        meta: from `gguf_metadata`.
        tensor_names: the file's tensor names (an absent `output.weight` means a tied head).
    """
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise AttnlabError(f"GGUF architecture '{arch}' is not supported; attnlab reads "
                           f"'llama' (LLaMA-shaped models such as SmolLM2)")

    def get(key: str, default=None):
        value = meta.get(f"llama.{key}", default)
        if value is None:
            raise AttnlabError(f"the GGUF file has no 'llama.{key}'; it is incomplete")
        return value

    d, heads = int(get("embedding_length")), int(get("attention.head_count"))
    head_dim = int(meta.get("llama.attention.key_length", d // heads))
    if int(meta.get("llama.rope.dimension_count", head_dim)) != head_dim:
        raise AttnlabError("partial rotary embeddings (llama.rope.dimension_count < head size) "
                           "are not supported")
    if meta.get("llama.rope.scaling.type", "none") not in ("none", "linear") or (
            "rope_freqs.weight" in tensor_names):
        raise AttnlabError("scaled RoPE (llama.rope.scaling.* or rope_freqs) is not supported")
    if float(meta.get("llama.rope.scaling.factor", 1.0)) != 1.0:
        raise AttnlabError("scaled RoPE (llama.rope.scaling.factor) is not supported")
    tokens = meta.get("tokenizer.ggml.tokens") or []
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"],
            "vocab_size": int(meta.get("llama.vocab_size", len(tokens))), "hidden_size": d,
            "intermediate_size": int(get("feed_forward_length")),
            "num_hidden_layers": int(get("block_count")), "num_attention_heads": heads,
            "num_key_value_heads": int(get("attention.head_count_kv", heads)),
            "head_dim": head_dim, "max_position_embeddings": int(get("context_length", 2048)),
            "hidden_act": "silu", "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
            "rope_theta": float(get("rope.freq_base", 10000.0)),
            # llama.cpp's converter has no bias switch: a file has bias tensors or not
            "attention_bias": "blk.0.attn_q.bias" in tensor_names,
            "mlp_bias": "blk.0.ffn_up.bias" in tensor_names,
            "tie_word_embeddings": "output.weight" not in tensor_names,
            "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
            "eos_token_id": meta.get("tokenizer.ggml.eos_token_id"), "dtype": "float32"}


def unpermute_rope_rows(w: Tensor, n_heads: int) -> Tensor:
    """Undo llama.cpp's reordering of the q (or k) projection rows.

    llama.cpp's converter stores, per head, the rows of the first half of the head's channels
    interleaved with those of the second half (0, d/2, 1, d/2+1, ...), so that its pairwise
    RoPE equals HF's rotate-half RoPE. This puts them back in HF's order (as transformers'
    `LlamaTensorProcessor._reverse_permute_weights`).

    Args:
        w: the stored weight (n_heads * head_dim, d_model) or bias (n_heads * head_dim,).
        n_heads: heads of this projection (the key/value heads for k).
    """
    head_dim = w.shape[0] // n_heads
    return w.reshape(n_heads, head_dim // 2, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def hf_tensors(reader, config: dict) -> dict[str, Tensor]:
    """Every tensor of the file, dequantized to fp32, under its Hugging Face LLaMA name.

    Args:
        reader: from `read_gguf`.
        config: from `hf_config` (the head counts for undoing the q/k permutation).
    """
    from gguf.quants import dequantize

    out: dict[str, Tensor] = {}
    for t in reader.tensors:
        name = _hf_name(t.name)
        try:
            # numpy gives the shape in row-major order: (out, in), as nn.Linear stores it
            values = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        except Exception as e:
            raise AttnlabError(f"GGUF tensor '{t.name}' ({t.tensor_type.name}) cannot be "
                               f"dequantized ({e})") from None
        w = torch.from_numpy(values.copy())  # the memory map is read-only and shared
        if ".attn_q." in t.name:
            w = unpermute_rope_rows(w, config["num_attention_heads"])
        elif ".attn_k." in t.name:
            w = unpermute_rope_rows(w, config["num_key_value_heads"])
        out[name] = w
    return out


def _hf_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) == 4 and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{parts[3]}"
    if len(parts) == 2 and parts[0] in _TOP_NAMES:
        return f"{_TOP_NAMES[parts[0]]}.{parts[1]}"
    raise AttnlabError(f"GGUF tensor '{name}' has no place in a LLaMA model")


# ---------------------------------------------------------------------------------------------
# Tokenizer and chat template


class ChatTokenizer(HFTokenizer):
    """An `HFTokenizer` that also knows its model's chat format (`chat`, or None) and the
    token that ends an answer (`eos_id`).

    Args:
        tokenizer: a `tokenizers.Tokenizer`.
        chat: the model's `ChatTemplate`, or None.
        **kwargs: as `HFTokenizer`.
    """

    def __init__(self, tokenizer: Tokenizer, *, chat: ChatTemplate | None = None, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.chat = chat

    @property
    def eos_id(self) -> int | None:
        """Id of the chat template's eos token (None without one)."""
        if self.chat is None or self.chat.eos_token is None:
            return None
        return self.hf.token_to_id(self.chat.eos_token)

    def chat_prompt(self, messages: list[dict] | str) -> str:
        """The prompt text of `messages`, ending where the assistant's answer begins.

        Args:
            messages: as `ChatTemplate.render`.
        """
        if self.chat is None:
            raise AttnlabError("this model has no chat template (no tokenizer.chat_template in "
                               "the GGUF file, no chat_template in tokenizer_config.json)")
        return self.chat.render(messages, add_generation_prompt=True)


def gguf_tokenizer(meta: dict) -> ChatTokenizer:
    """The file's tokenizer as a `tokenizers` byte-level BPE.

    Control tokens (token type 3, e.g. <|im_start|>) are added as special tokens and
    user-defined ones (type 4, e.g. <think>) as plain added tokens, so that both are matched
    whole in text and kept by `decode`, as llama.cpp and transformers do. A bos
    token is prepended only when `tokenizer.ggml.add_bos_token` says so.

    Args:
        meta: from `gguf_metadata`.
    """
    kind, pre = meta.get("tokenizer.ggml.model"), meta.get("tokenizer.ggml.pre")
    if kind != "gpt2":
        raise AttnlabError(f"GGUF tokenizer '{kind}' is not supported; attnlab reads byte-level "
                           f"BPE vocabularies (tokenizer.ggml.model 'gpt2')")
    if pre not in _PLAIN_PRE + _DIGIT_SPLIT_PRE:
        raise AttnlabError(f"GGUF pre-tokenizer '{pre}' is not supported; supported: "
                           f"{', '.join(p for p in _PLAIN_PRE + _DIGIT_SPLIT_PRE if p)}")
    tokens = list(meta.get("tokenizer.ggml.tokens") or [])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges") or []]
    if not tokens or not merges:
        raise AttnlabError("the GGUF file has no tokenizer vocabulary or merges")
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab, merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (byte_level if pre in _PLAIN_PRE else pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), byte_level]))
    tok.decoder = decoders.ByteLevel()
    types = list(meta.get("tokenizer.ggml.token_type") or [])
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True)
                            for t, kind in zip(tokens, types, strict=False) if kind == 3])
    # User-defined tokens (type 4, e.g. <think>) are matched whole too, but are text
    tok.add_tokens([AddedToken(t, normalized=False, special=False)
                    for t, kind in zip(tokens, types, strict=False) if kind == 4])
    bos = meta.get("tokenizer.ggml.bos_token_id")
    if meta.get("tokenizer.ggml.add_bos_token", False) and bos is not None:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]} $A", pair=f"{tokens[bos]} $A $B",
            special_tokens=[(tokens[bos], bos)])
    return ChatTokenizer(tok, chat=gguf_chat_template(meta))


def _template_json(value, ensure_ascii: bool = False, indent: int | None = None,
                   separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    """The `tojson` filter chat templates are written against."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


@dataclass(frozen=True)
class ChatTemplate:
    """A model's chat format: the Jinja2 template that turns messages into its prompt text,
    with the bos/eos token strings the template may use.

    Args:
        template: the Jinja2 source (`tokenizer.chat_template` in GGUF, `chat_template` in a
            Hugging Face tokenizer_config.json).
        bos_token: the begin-of-sequence token text, or None.
        eos_token: the token that ends an answer (generation stops there), or None.
    """

    template: str
    bos_token: str | None = None
    eos_token: str | None = None

    def render(self, messages: list[dict] | str, *, add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, as transformers' `apply_chat_template(...,
        tokenize=False)` gives it.

        Args:
            messages: [{"role": "user", "content": "..."}, ...], or one user message as a str.
            add_generation_prompt: end with the opening of the assistant's turn.
        """
        from jinja2 import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]

        def raise_exception(message):  # templates call this to refuse a conversation
            raise AttnlabError(f"the chat template refused the messages: {message}")

        # the template comes from a file: a sandbox, so it can only format text (transformers
        # uses the same environment and flags)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.globals["raise_exception"] = raise_exception
        # What templates expect of transformers: JSON as written (keys in order, no HTML
        # escapes; jinja's own tojson sorts keys and escapes <, > and &), and today's date.
        env.filters["tojson"] = _template_json
        env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
        try:
            return env.from_string(self.template).render(
                messages=messages, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "", eos_token=self.eos_token or "")
        except TemplateError as e:
            raise AttnlabError(f"the model's chat template failed ({e})") from None

    def tokenizer_config(self) -> dict:
        """The entries of a Hugging Face tokenizer_config.json that carry this template."""
        return {"chat_template": self.template, "bos_token": self.bos_token,
                "eos_token": self.eos_token}

    @classmethod
    def from_folder(cls, folder: str | Path) -> ChatTemplate | None:
        """The template of a Hugging Face folder (None when it has none): chat_template.jinja,
        where recent transformers save it, else tokenizer_config.json's "chat_template"; the
        bos / eos tokens from tokenizer_config.json.

        Args:
            folder: the model folder (or run directory).
        """
        folder = Path(folder)
        jinja, config = folder / "chat_template.jinja", folder / "tokenizer_config.json"
        template = None
        if jinja.is_file():
            try:
                template = jinja.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise AttnlabError(f"cannot read {jinja} ({e})") from None
        if config.is_file():
            return cls.from_tokenizer_config(config, template=template)
        return None if template is None else cls(template)

    @classmethod
    def from_tokenizer_config(cls, path: str | Path,
                              template: str | None = None) -> ChatTemplate | None:
        """The template of a tokenizer_config.json (None when it has none).

        Args:
            path: the tokenizer_config.json file.
            template: a template from elsewhere (chat_template.jinja), which wins over the
                file's; its bos / eos tokens still come from the file.
        """
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise AttnlabError(f"{path} is not readable JSON ({e})") from None
        if template is None:
            template = config.get("chat_template") if isinstance(config, dict) else None
        if isinstance(template, list):  # several named templates: the default one
            template = next((t.get("template") for t in template
                             if isinstance(t, dict) and t.get("name") == "default"), None)
        if not isinstance(template, str):
            return None

        def token(key):  # HF writes a token as its text or as {"content": text, ...}
            value = config.get(key)
            return value.get("content") if isinstance(value, dict) else value

        return cls(template, token("bos_token"), token("eos_token"))


def gguf_chat_template(meta: dict) -> ChatTemplate | None:
    """The file's chat template (None when it has none).

    Args:
        meta: from `gguf_metadata`.
    """
    template = meta.get("tokenizer.chat_template")
    if not isinstance(template, str):
        return None
    tokens = meta.get("tokenizer.ggml.tokens") or []

    def token(key):
        i = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    return ChatTemplate(template, token("bos"), token("eos"))


# ---------------------------------------------------------------------------------------------
# Public API


@dataclass
class GGUFModel:
    """Everything a GGUF file holds, in Hugging Face terms.

    Args:
        config: the HF LLaMA config dict.
        tensors: the HF state dict, fp32.
        tokenizer: the tokenizer, with the chat template when the file has one.
    """

    config: dict
    tensors: dict[str, Tensor]
    tokenizer: ChatTokenizer


def read_gguf_model(path: str | Path) -> GGUFModel:
    """Read and dequantize a GGUF file (about 2 s for SmolLM2-135M).

    Args:
        path: a .gguf file.
    """
    reader = read_gguf(path)
    meta = gguf_metadata(reader)
    config = hf_config(meta, {t.name for t in reader.tensors})
    tokenizer = gguf_tokenizer(meta)
    tokenizer.eos_ids = token_ids(config.get("eos_token_id"))
    return GGUFModel(config, hf_tensors(reader, config), tokenizer)


def load_gguf(path: str | Path) -> tuple[GPT, ChatTokenizer]:
    """An attnlab `GPT` (eval mode, fp32) and its tokenizer (with the chat template) from a
    GGUF file.

    Args:
        path: a .gguf file of a LLaMA-shaped model.
    """
    found = read_gguf_model(path)
    return model_from_hf(found.config, found.tensors).eval(), found.tokenizer

