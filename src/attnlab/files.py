"""File helpers shared by data caches, checkpoints and run directories: atomic writes,
hashing, and the checks on an output file a user names."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from attnlab.errors import AttnlabError


def atomic_write(path: Path, content: bytes | str | Callable[[BinaryIO], object]) -> None:
    """Write `content` to `path` so that readers see the old file or the new one, never half.

    The bytes go to a temporary file in the same folder (so the rename cannot cross file
    systems), are fsynced, and replace `path` with `os.replace`.

    Args:
        path: destination file; its folder is created when missing.
        content: bytes, text (written as UTF-8), or a function that writes into a binary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, umask_mode())  # mkstemp's 0600 would hide the file from others
        with os.fdopen(fd, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, (bytes, bytearray, memoryview)):
                f.write(content)
            else:
                content(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    # The rename itself lives in the folder's metadata; without this a power cut could lose it.
    # Not every platform lets a folder be opened (Windows), which is harmless to skip.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_safetensors(tensors: dict, path: Path, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with the file's mode from the umask (the library writes
    0600) and a failed write (a full disk) as one line instead of its own exception type."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        raise AttnlabError(f"cannot write {path}: {e}") from None
    os.chmod(path, umask_mode())


def umask_mode(base: int = 0o666) -> int:
    """`base` less the umask: the mode a plain open() (0o666) or mkdir() (0o777) would give,
    for files and folders made by mkstemp / mkdtemp (0600 / 0700)."""
    return base & ~_umask()


def _umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks so large files do not fill memory."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_output(path: Path | None, suffixes: tuple[str, ...], flag: str, *,
                 force: bool = False) -> Path | None:
    """Refuse, before any work is done, an output file the user named that cannot or must not
    be written: a wrong suffix (the writer picks the format from it), a folder, a folder that
    does not exist, or an existing file (a user's file is never replaced unless `force`).

    Args:
        path: the file, or None (nothing asked for; returned as is).
        suffixes: the accepted suffixes, lower case with the dot (".png", ".json").
        flag: the option's name for the message (e.g. "--out").
        force: allow replacing an existing file.
    """
    if path is None:
        return None
    path = Path(path)
    if path.is_dir():
        raise AttnlabError(f"{flag} {path} is a folder; give a file name ending in "
                           f"{' or '.join(suffixes)}")
    if path.suffix.lower() not in suffixes:
        raise AttnlabError(f"{flag} must end in {' or '.join(suffixes)}, got '{path.name}'")
    if not path.parent.is_dir():
        raise AttnlabError(f"the folder of {flag} does not exist: {path.parent}; create it first")
    if path.exists() and not force:
        raise AttnlabError(f"{flag} {path} exists; give another name, or --force to replace it")
    return path


def read_text_file(path: Path, what: str = "the text file") -> str:
    """The UTF-8 text of a file the user named, or one clear error (missing, a folder, not
    readable, not UTF-8)."""
    path = Path(path)
    if path.is_dir():
        raise AttnlabError(f"{what} {path} is a folder, not a file")
    if not path.exists():
        raise AttnlabError(f"{what} {path} does not exist")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise AttnlabError(f"cannot read {path} as UTF-8 text ({e.reason} at byte "
                           f"{e.start})") from None
    except OSError as e:
        raise AttnlabError(f"cannot read {path}: {e.strerror or e}") from None
