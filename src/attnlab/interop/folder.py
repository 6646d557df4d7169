"""Model folders on disk, and conversion between the two kinds attnlab reads and writes:

- a Hugging Face folder: config.json (with `model_type`), model.safetensors (or shards listed
  in model.safetensors.index.json) and, when there is one, tokenizer.json;
- an attnlab run directory: config.json (with `task` and `model` sections), the weights in
  best/ (or last/) and tokenizer.json. `attnlab generate` and `tasks.run.load_run` read it.

`load_pretrained(source)` is the one entry point: it looks at what `source` is (an HF folder, a
run directory, a GGUF file, a named model from `attnlab models list`) and loads it; `convert`
writes a GGUF file out as either folder.

Writing never overwrites anything: the destination must be new or empty, and the files are
written into a temporary sibling folder that is renamed into place only when complete.
Weights are read from safetensors only; nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from attnlab.data.tokenizers import CharTokenizer, load_tokenizer
from attnlab.errors import AttnlabError, did_you_mean
from attnlab.files import atomic_write, fsync_dir, save_safetensors
from attnlab.interop.gguf import ChatTemplate, ChatTokenizer, load_gguf, read_gguf_model
from attnlab.interop.hf import model_from_hf, model_to_hf
from attnlab.interop.sources import MODEL_SOURCES, fetch_model
from attnlab.interop.tokenizer import HFTokenizer, token_ids
from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig
from attnlab.train.checkpoint import load_model_weights, read_safetensors, resolve, save_checkpoint

#: An attnlab run's task -> the model it holds (as tasks.config.TASK_MODELS, which sits above).
_TASK_MODELS = {"lm": (GPT, GPTConfig), "classify": (Encoder, EncoderConfig)}


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttnlabError(f"no {path.name} in {path.parent}") from None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise AttnlabError(f"{path} is not readable JSON ({e}); it may be corrupt") from None
    if not isinstance(obj, dict):
        raise AttnlabError(f"{path} is not a JSON object")
    return obj


def folder_kind(path: str | Path) -> str:
    """"hf" for a Hugging Face model folder, "attnlab" for an attnlab run directory.

    Args:
        path: the folder.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise AttnlabError(f"no such folder: {path}")
    if not path.is_dir():
        raise AttnlabError(f"{path} is not a folder; give a Hugging Face model folder or an "
                           f"attnlab run directory")
    if not (path / "config.json").is_file():
        raise AttnlabError(f"{path} has no config.json: it is neither a Hugging Face model "
                           f"folder nor an attnlab run directory")
    config = _read_json(path / "config.json")
    if "model_type" in config:
        return "hf"
    if "model" in config:
        return "attnlab"
    raise AttnlabError(f"{path / 'config.json'} has neither a model_type (Hugging Face) nor a "
                       f"model section (attnlab run)")


# ---------------------------------------------------------------------------------------------
# Hugging Face folders


def read_hf_tensors(folder: str | Path) -> dict[str, Tensor]:
    """The tensors of an HF folder: model.safetensors, or the shards its index lists.

    Args:
        folder: the HF model folder.
    """
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        return read_safetensors(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise AttnlabError(f"{index} has no weight_map")
        tensors: dict[str, Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            tensors.update(read_safetensors(folder / shard))
        return tensors
    if any((folder / n).is_file() for n in ("pytorch_model.bin", "model.pt", "model.pth")):
        raise AttnlabError(f"{folder} holds its weights only as a pickle (pytorch_model.bin), "
                           f"which attnlab never loads; save them as model.safetensors first")
    raise AttnlabError(f"{folder} has no model.safetensors")


def load_hf_folder(path: str | Path) -> tuple[GPT | Encoder, HFTokenizer | None]:
    """An attnlab model (in eval mode) and tokenizer from a Hugging Face model folder.

    GPT-2 and LLaMA-style folders give a `GPT`, BERT folders an `Encoder` (see
    `attnlab.interop.hf`). The tokenizer is the folder's tokenizer.json as an `HFTokenizer`,
    or None when there is none; a sentence-transformers folder's sentence_bert_config.json
    sets its `max_length`.

    Args:
        path: the folder (config.json + model.safetensors [+ tokenizer.json]).
    """
    folder = Path(path).expanduser()
    if folder_kind(folder) != "hf":
        raise AttnlabError(f"{folder} is an attnlab run directory, not a Hugging Face folder; "
                           f"load it with load_pretrained")
    model = model_from_hf(_read_json(folder / "config.json"), read_hf_tensors(folder))
    return model.eval(), _hf_tokenizer(folder)


def _hf_tokenizer(folder: Path) -> HFTokenizer | None:
    if not (folder / "tokenizer.json").is_file():
        return None
    max_length = None
    if (folder / "sentence_bert_config.json").is_file():
        max_length = _read_json(folder / "sentence_bert_config.json").get("max_seq_length")
    tokenizer = _with_chat(folder, HFTokenizer.from_file(folder / "tokenizer.json",
                                                          max_length=max_length))
    tokenizer.eos_ids = _model_eos(folder)
    return tokenizer


def _model_eos(folder: Path) -> tuple[int, ...]:
    """The eos ids transformers' `generate` stops at: generation_config.json's, else
    config.json's."""
    for name in ("generation_config.json", "config.json"):
        if (folder / name).is_file():
            ids = token_ids(_read_json(folder / name).get("eos_token_id"))
            if ids:
                return ids
    return ()


def _with_chat(folder: Path, tokenizer: HFTokenizer) -> HFTokenizer:
    """`tokenizer` as a ChatTokenizer when the folder's tokenizer_config.json has a chat
    template (HF folders and run directories converted from GGUF or HF keep it there)."""
    chat = ChatTemplate.from_folder(folder)
    if chat is None:
        return tokenizer
    return ChatTokenizer(tokenizer.hf, chat=chat, max_length=tokenizer.max_length,
                         source=tokenizer.to_json())


def save_hf_folder(model: GPT | Encoder, path: str | Path, *,
                   tokenizer: object | None = None) -> list[str]:
    """Write `model` as a Hugging Face folder that `transformers` loads with `from_pretrained`
    (GPT2LMHeadModel, LlamaForCausalLM or BertModel; see `model_to_hf`).

    Args:
        model: an attnlab GPT or Encoder of an exportable shape.
        path: a new or empty folder.
        tokenizer: written as tokenizer.json in the `tokenizers` format: a BPE or an
            HFTokenizer as it is, attnlab's character tokenizer as `CharTokenizer.to_hf()`.

    Returns:
        The names of the files written.
    """
    config, tensors = model_to_hf(model)  # refused shapes fail here, before any write
    tokenizer_json = _tokenizer_json(tokenizer)
    with _new_folder(path) as tmp:
        atomic_write(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        # transformers refuses safetensors files without a format tag
        save_safetensors(tensors, tmp / "model.safetensors", metadata={"format": "pt"})
        if tokenizer_json is not None:
            atomic_write(tmp / "tokenizer.json", tokenizer_json)
            _write_chat(tmp, tokenizer)
        return sorted(p.name for p in tmp.iterdir())


def _write_chat(folder: Path, tokenizer) -> None:
    """tokenizer_config.json with the chat template, when the tokenizer has one."""
    chat = getattr(tokenizer, "chat", None)
    if chat is not None:
        atomic_write(folder / "tokenizer_config.json",
                     json.dumps(chat.tokenizer_config(), indent=2) + "\n")


def _tokenizer_json(tokenizer) -> str | None:
    if tokenizer is None:
        return None
    if isinstance(tokenizer, CharTokenizer):
        return tokenizer.to_hf().to_str()
    return tokenizer.to_json()


# ---------------------------------------------------------------------------------------------
# attnlab run directories


def load_attnlab_folder(path: str | Path, *, checkpoint: str = "best",
                        ) -> tuple[GPT | Encoder, object | None]:
    """An attnlab model (in eval mode) and tokenizer from a run directory, as
    `tasks.run.load_run` reads it: config.json, weights from best/ (falling back to last/).

    The tokenizer is attnlab's own for a character tokenizer, an `HFTokenizer` for a
    `tokenizers` file (a BPE trained by attnlab, or the tokenizer of a converted HF folder),
    None when there is no tokenizer.json.

    Args:
        path: the run directory.
        checkpoint: "best" or "last".
    """
    folder = Path(path).expanduser()
    if folder_kind(folder) != "attnlab":
        raise AttnlabError(f"{folder} is a Hugging Face folder, not an attnlab run directory")
    config = _read_json(folder / "config.json")
    task = config.get("task", "lm")
    if task not in _TASK_MODELS:
        # The other tasks' models (ViT, seq2seq, a classifier with its head, ...) have no
        # Hugging Face form here; their runs load whole with their task.
        raise AttnlabError(f"{folder} holds a run of task '{task}'; load_pretrained and "
                           f"convert read lm (GPT) and classify (Encoder) runs; load it with "
                           f"attnlab.load_run")
    model_cls, config_cls = _TASK_MODELS[task]
    model = model_cls(config_cls.from_dict(config["model"], "model."))
    found = resolve(folder / checkpoint) or (resolve(folder / "last")
                                             if checkpoint == "best" else None)
    if found is None:
        raise AttnlabError(f"{folder} has no weights ({checkpoint}/ checkpoint missing)")
    load_model_weights(model, found / "model.safetensors")
    return model.eval(), _attnlab_tokenizer(folder)


def _attnlab_tokenizer(folder: Path):
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    if _read_json(path).get("type") == "char":  # attnlab's own format
        return load_tokenizer(path)
    return _with_chat(folder, HFTokenizer.from_file(path))


def save_attnlab_folder(model: GPT | Encoder, path: str | Path, *,
                        tokenizer: object | None = None, source: str | None = None,
                        ) -> list[str]:
    """Write `model` as an attnlab run directory: config.json (`task` lm for a GPT, classify
    for an Encoder, and the `model` section; data and train keep their defaults), the weights
    as the best/ checkpoint, and tokenizer.json.

    Args:
        model: an attnlab GPT or Encoder.
        path: a new or empty folder.
        tokenizer: anything with `to_json()` (attnlab tokenizers, HFTokenizer), or None.
        source: where the weights came from, recorded in best/trainer.json.

    Returns:
        The names of the files written (checkpoint files as best/NAME).
    """
    task = "lm" if isinstance(model, GPT) else "classify"
    config = {"task": task, "model": model.config.to_dict()}
    with _new_folder(path) as tmp:
        atomic_write(tmp / "config.json", json.dumps(config, indent=2) + "\n")
        save_checkpoint(tmp / "best", model, None, {"step": 0, "converted_from": source})
        if tokenizer is not None:
            atomic_write(tmp / "tokenizer.json", tokenizer.to_json())
            _write_chat(tmp, tokenizer)
        return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Dispatch and conversion


def load_pretrained(source: str | Path) -> tuple[GPT | Encoder, object | None]:
    """(model in eval mode, tokenizer or None) from whatever `source` names.

    Args:
        source: a Hugging Face model folder, an attnlab run directory, a GGUF file
            (dequantized to fp32, see `attnlab.interop.gguf`), or the name of a model from
            `attnlab models list` (fetched into the cache on first use).
    """
    path = Path(source).expanduser()
    if path.is_dir():
        kind = folder_kind(path)
        return load_hf_folder(path) if kind == "hf" else load_attnlab_folder(path)
    if path.is_file():
        if path.suffix == ".gguf":
            return load_gguf(path)
        raise AttnlabError(f"{path} is a file; give a model folder (config.json + "
                           f"model.safetensors), a GGUF file, a run directory or a model name")
    if str(source) in MODEL_SOURCES:
        folder = fetch_model(str(source))
        model_file = MODEL_SOURCES[str(source)].file
        return load_gguf(folder / model_file) if model_file else load_hf_folder(folder)
    raise AttnlabError(f"no such folder or model name: '{source}'"
                       f"{did_you_mean(str(source), MODEL_SOURCES)}; named models: "
                       f"{', '.join(sorted(MODEL_SOURCES))}")


@dataclass
class Conversion:
    """What `convert` did.

    Args:
        to: "hf" or "attnlab", the format written.
        files: the files written, relative to the output folder.
    """

    to: str
    files: list[str]


def convert(src: str | Path, out: str | Path, *, to: str | None = None,
            checkpoint: str = "best") -> Conversion:
    """Convert a Hugging Face folder into an attnlab run directory, or the other way round, or
    a GGUF file into either.

    The direction follows from what `src` is; `to` only confirms it (a GGUF file goes to an
    attnlab run directory unless `to="hf"`). Weights are copied exactly (a round trip gives
    equal tensors); GGUF weights are dequantized to fp32 first. A chat template travels in
    tokenizer_config.json.

    Args:
        src: an HF model folder, an attnlab run directory or a .gguf file.
        out: a new or empty folder.
        to: "hf" or "attnlab"; must match the direction `src` implies when given.
        checkpoint: the run's "best" or "last" weights (attnlab -> hf only).
    """
    src, out = Path(src).expanduser(), Path(out).expanduser()
    if src.is_file() and src.suffix == ".gguf":
        _check_new(out)  # before the (slow) read
        found = read_gguf_model(src)
        model = model_from_hf(found.config, found.tensors).eval()
        if to == "hf":
            return Conversion("hf", save_hf_folder(model, out, tokenizer=found.tokenizer))
        return Conversion("attnlab", save_attnlab_folder(model, out, tokenizer=found.tokenizer,
                                                         source=str(src)))
    kind = folder_kind(src)
    target = "attnlab" if kind == "hf" else "hf"
    if to is not None and to != target:
        what = "a Hugging Face folder" if kind == "hf" else "an attnlab run directory"
        raise AttnlabError(f"{src} is {what}, so it converts to {target}, not {to}")
    _check_new(out)  # before the (slow) load
    if kind == "hf":
        model, tokenizer = load_hf_folder(src)
        return Conversion("attnlab", save_attnlab_folder(model, out, tokenizer=tokenizer,
                                                         source=str(src)))
    model, tokenizer = load_attnlab_folder(src, checkpoint=checkpoint)
    return Conversion("hf", save_hf_folder(model, out, tokenizer=tokenizer))


def _check_new(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise AttnlabError(f"{path} is a file; give a new or empty output folder (nothing was "
                           f"written)")
    if path.exists() and any(path.iterdir()):
        raise AttnlabError(f"{path} exists and is not empty; give a new or empty output folder "
                           f"(nothing was written)")


@contextlib.contextmanager
def _new_folder(path: str | Path) -> Iterator[Path]:
    """A temporary sibling of `path` to fill; renamed to `path` when the block succeeds,
    removed when it fails. `path` must be new or an empty folder, and stays untouched until
    the rename."""
    path = Path(path).expanduser()
    _check_new(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's folder is private (0700); the result is an ordinary folder
        yield tmp
        try:
            # rename(2) replaces an empty folder and refuses a non-empty one, so files that
            # appeared in `path` meanwhile are never overwritten
            os.replace(tmp, path)
        except OSError as e:
            raise AttnlabError(f"cannot move the new files into {path} ({e.strerror}); "
                               f"nothing there was changed") from None
        fsync_dir(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
