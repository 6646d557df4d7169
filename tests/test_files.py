"""attnlab.files: atomic writes keep the folder's readers whole and honour the umask."""

import os
import stat

import pytest

from attnlab.files import atomic_write


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_write_gives_the_mode_a_plain_open_would(tmp_path, umask):
    before = os.umask(umask)
    try:
        atomic_write(tmp_path / "atomic.json", "{}")
        with open(tmp_path / "plain.json", "w") as f:
            f.write("{}")
    finally:
        os.umask(before)
    mode = stat.S_IMODE((tmp_path / "atomic.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode) == 0o666 & ~umask


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "sub" / "x.bin"
    atomic_write(path, b"one")
    atomic_write(path, lambda f: f.write(b"two"))
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]
    with pytest.raises(RuntimeError):
        atomic_write(path, lambda f: (_ for _ in ()).throw(RuntimeError("boom")))
    assert path.read_bytes() == b"two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.bin"]


def test_safetensors_follow_the_umask_and_a_failed_write_is_one_line(tmp_path, monkeypatch):
    import safetensors.torch
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from attnlab.errors import AttnlabError
    from attnlab.files import save_safetensors

    before = os.umask(0o022)
    try:
        save_safetensors({"w": torch.arange(3.0)}, tmp_path / "w.safetensors")
    finally:
        os.umask(before)
    assert stat.S_IMODE((tmp_path / "w.safetensors").stat().st_mode) == 0o644  # not 0600
    assert torch.equal(load_file(tmp_path / "w.safetensors")["w"], torch.arange(3.0))

    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: IoError(No space left on device)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(AttnlabError, match=r"cannot write .*x\.safetensors: .*No space left"):
        save_safetensors({"w": torch.zeros(1)}, tmp_path / "x.safetensors")
