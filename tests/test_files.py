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
