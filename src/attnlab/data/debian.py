"""Files from Debian's package archive, fetched with apt, pinned by sha256, cached.

Two kinds of pinned file:

- `DebianPackage`: one binary package at one version (`apt-get download NAME=VERSION` into a
  private folder); its .deb is unpacked with `dpkg-deb -x`.
- `DebianIndex`: one index file of a release, e.g. bookworm's `main/i18n/Translation-en` (the
  long package descriptions). apt fetches it with `apt-get update` into a private lists folder
  (`Dir::State::Lists`, so the machine's own lists are untouched), checks it against the
  release's signed InRelease, and `apt-helper cat-file` undoes whatever compression apt stored
  it in. The uncompressed bytes are then checked against the sha256 pinned here.

apt is the only network access; the archive hosts come from the machine's own apt sources. A
file put by hand into `cache_dir()/downloads` under its pinned name (right sha256) is used
without any network access, which is how a machine without apt gets the data.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from attnlab.errors import AttnlabError
from attnlab.files import sha256_file


@dataclass(frozen=True)
class DebianPackage:
    """A binary package pinned to a version and the sha256 of its .deb.

    Args:
        name: the package name, e.g. "sword-text-kjv".
        version: the exact version, e.g. "14.3-1".
        sha256: hex sha256 of the .deb; any other bytes are refused.
        arch: the architecture in the file name ("all" for data packages).
    """

    name: str
    version: str
    sha256: str
    arch: str = "all"

    @property
    def archive(self) -> str:
        return f"{self.name}_{self.version}_{self.arch}.deb"

    @property
    def source(self) -> str:
        return f"Debian package {self.name}={self.version}"


@dataclass(frozen=True)
class DebianIndex:
    """One index file of a Debian release, pinned by the sha256 of its uncompressed bytes.

    Args:
        suite: the release (apt's "dists/" name), e.g. "bookworm".
        path: the file inside the release, e.g. "main/i18n/Translation-en".
        sha256: hex sha256 of the uncompressed file.
        language: the description language apt must fetch (Acquire::Languages).
    """

    suite: str
    path: str
    sha256: str
    language: str = "en"

    @property
    def archive(self) -> str:
        return f"debian-{self.suite}-{self.path.replace('/', '-')}"

    @property
    def source(self) -> str:
        return f"Debian {self.suite} {self.path}"


def _downloads() -> Path:
    from attnlab.data.corpora import cache_dir

    path = cache_dir() / "downloads"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _need(tool: str, item) -> str:
    found = shutil.which(tool)
    if found is None:
        raise AttnlabError(f"{tool} not found: {item.source} comes from Debian's archive through "
                           f"apt; on a machine without apt put {item.archive} (sha256 "
                           f"{item.sha256[:12]}...) into {_downloads()} by hand")
    return found


def _run(cmd: list[str], item, cwd: Path | None = None) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=cwd,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AttnlabError(f"could not run {cmd[0]} for {item.source} ({e})") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines()
                 if ln.strip() and not ln.startswith("W:")]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise AttnlabError(f"{cmd[0]} could not fetch {item.source}: {why}; put {item.archive} "
                           f"into {_downloads()} by hand, or check apt (run apt-get update)")


def _keep(got: Path, item, kept: Path) -> Path:
    digest = sha256_file(got)
    if digest != item.sha256:
        raise AttnlabError(f"checksum mismatch for {item.source}: sha256 {digest}, expected "
                           f"{item.sha256}; refusing to use it")
    os.replace(got, kept)
    return kept


def _cached(item) -> tuple[Path, bool]:
    """Where the pinned `item.archive` lives in the downloads cache, and whether it is there
    whole (its sha256 matches)."""
    kept = _downloads() / item.archive
    return kept, kept.is_file() and sha256_file(kept) == item.sha256


def fetch_deb(package: DebianPackage, *, quiet: bool = False) -> Path:
    """The pinned .deb in `cache_dir()/downloads`, downloaded with apt when missing or damaged.

    Args:
        package: the pinned package.
        quiet: no progress message.
    """
    kept, whole = _cached(package)
    if whole:
        return kept
    apt = _need("apt-get", package)
    if not quiet:  # stderr: stdout may be a --json answer
        tqdm.write(f"downloading {package.source} with apt", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=kept.parent, prefix=".apt-") as tmp:
        os.chmod(tmp, 0o755)  # apt's unprivileged _apt user writes here when run as root
        _run([apt, "download", "-q", f"{package.name}={package.version}"], package, cwd=Path(tmp))
        debs = sorted(Path(tmp).glob("*.deb"))
        if not debs:
            raise AttnlabError(f"apt saved no .deb for {package.source}")
        return _keep(debs[0], package, kept)


def unpack_deb(deb: Path, dest: Path) -> Path:
    """Unpack the data files of `deb` below `dest` (dpkg-deb -x); returns `dest`."""
    dpkg = shutil.which("dpkg-deb")
    if dpkg is None:
        raise AttnlabError(f"dpkg-deb not found: cannot unpack {deb.name}; install dpkg")
    proc = subprocess.run([dpkg, "-x", str(deb), str(dest)], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise AttnlabError(f"dpkg-deb could not unpack {deb}: {proc.stderr.strip()}; delete it "
                           f"and retry")
    return dest


def fetch_index(index: DebianIndex, *, quiet: bool = False) -> Path:
    """The pinned, uncompressed index file in `cache_dir()/downloads`, fetched with apt.

    Args:
        index: the pinned file.
        quiet: no progress message.
    """
    kept, whole = _cached(index)
    if whole:
        return kept
    apt = _need("apt-get", index)
    helper = Path("/usr/lib/apt/apt-helper")
    if not helper.is_file():
        raise AttnlabError(f"{helper} not found: apt is too old or missing for {index.source}")
    if not quiet:
        tqdm.write(f"downloading {index.source} with apt", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=kept.parent, prefix=".apt-") as tmp:
        lists = Path(tmp) / "lists"
        (lists / "partial").mkdir(parents=True)
        os.chmod(tmp, 0o755)
        for folder in (lists, lists / "partial"):
            os.chmod(folder, 0o777)  # apt downloads as the unprivileged _apt user
        options = [f"Dir::State::Lists={lists}", f"Acquire::Languages={index.language}",
                   # only the translations: no Packages, no Contents, no AppStream
                   "Acquire::IndexTargets::deb::Packages::DefaultEnabled=false",
                   "Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false",
                   "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
                   "APT::Update::Post-Invoke-Success::=", "APT::Update::Post-Invoke::="]
        _run([apt, "update", "-q", *(x for o in options for x in ("-o", o))], index)
        stem = f"_dists_{index.suite}_{index.path.replace('/', '_')}"
        found = sorted(p for p in lists.iterdir()
                       if re.sub(r"\.(lz4|xz|gz|bz2|zst|lzma)$", "", p.name).endswith(stem))
        if not found:
            raise AttnlabError(f"apt fetched no {index.source}: this machine's apt sources do not "
                               f"name the {index.suite} release; put {index.archive} into "
                               f"{kept.parent} by hand")
        plain = Path(tmp) / index.archive
        with open(plain, "wb") as out:
            proc = subprocess.run([str(helper), "cat-file", str(found[0])], stdout=out,
                                  stderr=subprocess.PIPE, check=False)
        if proc.returncode != 0:
            raise AttnlabError(f"apt-helper could not read {found[0].name}: "
                               f"{proc.stderr.decode(errors='replace').strip()}")
        return _keep(plain, index, kept)
