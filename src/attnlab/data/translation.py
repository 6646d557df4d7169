"""English -> Spanish verse pairs: the King James Version and the Reina-Valera 1909, both read
from Debian's SWORD module packages (zText format), aligned by verse.

A zText module keeps each testament in three files:

    ot.bzs / nt.bzs   block index, 12 bytes per block: offset in .bzz, compressed size,
                      uncompressed size (uint32 little-endian each)
    ot.bzv / nt.bzv   verse index, 10 bytes per slot: block number, offset inside the
                      uncompressed block (uint32 each), size (uint16)
    ot.bzz / nt.bzz   the blocks, each zlib-compressed

Slots follow the module's versification: slot 0 the module header, slot 1 the testament
heading, then per book a book-intro slot and per chapter a chapter-heading slot followed by its
verses. Both modules here use the KJV versification, and their OSIS markup names each book
(`<div type="book" osisID="Gen"/>`) in the book-intro slot and each chapter
(`<chapter osisID="Gen.1"/>`) in the chapter-heading slot, so verses are labelled `Gen.1.1`
from the markup itself and the two translations are joined on those labels.
"""

from __future__ import annotations

import re
import struct
import tempfile
import zlib
from pathlib import Path

from attnlab.data.debian import DebianPackage, fetch_deb, unpack_deb
from attnlab.data.pairs import PairDataset, copy_source, register_pairs
from attnlab.errors import AttnlabError

KJV = DebianPackage("sword-text-kjv", "14.3-1",
                    "9f463f28ce665f6f528fc723179722bced880a4c5485f7a41bf742838315de57")
SPARV = DebianPackage("sword-text-sparv", "2.60-1",
                      "5c87f9b2bc97457e8a872f5bae7ea7ce59cb3de1dcee73e4d4740451863694cf")
_MODULES = "usr/share/sword/modules/texts/ztext"


def read_ztext(folder: str | Path, testament: str) -> list[str]:
    """Every slot of one testament of a zText module, as raw (markup) text; "" where empty.

    Args:
        folder: the module's data folder (holding ot.bzs, ot.bzv, ot.bzz, ...).
        testament: "ot" or "nt".
    """
    folder = Path(folder)
    try:
        bzs = (folder / f"{testament}.bzs").read_bytes()
        bzv = (folder / f"{testament}.bzv").read_bytes()
        bzz = (folder / f"{testament}.bzz").read_bytes()
    except OSError as e:
        raise AttnlabError(f"not a zText module at {folder}: {e.strerror or e}") from None
    if len(bzs) % 12 or len(bzv) % 10:
        raise AttnlabError(f"{folder}: {testament}.bzs/.bzv sizes are not whole index entries; "
                           f"the module is damaged")
    blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
    unpacked: dict[int, bytes] = {}
    slots: list[str] = []
    for i in range(0, len(bzv), 10):
        block, offset, size = struct.unpack_from("<IIH", bzv, i)
        if size == 0:
            slots.append("")
            continue
        if block >= len(blocks):
            raise AttnlabError(f"{folder}: {testament}.bzv names block {block} of {len(blocks)}")
        if block not in unpacked:
            start, length, _ = blocks[block]
            try:
                unpacked[block] = zlib.decompress(bzz[start:start + length])
            except zlib.error:
                raise AttnlabError(f"{folder}: block {block} of {testament}.bzz is not zlib "
                                   f"data; the module is damaged") from None
        slots.append(unpacked[block][offset:offset + size].decode("utf-8"))
    return slots


# a book's start (its end milestone, `<div type="book" eID=.../>`, closes the book's last verse)
_BOOK = re.compile(r'<div\b(?=[^>]*\btype="book")(?![^>]*\beID=)[^>]*>')
_CHAPTER = re.compile(r'<chapter\b[^>]*\bosisID="([^"]+)"')
# Footnotes, cross-references and titles are not part of the verse's running text.
_DROP = re.compile(r"<(note|title)\b[^>]*(?<!/)>.*?</\1>", re.DOTALL)
_TAG = re.compile(r"<[^>]+>")
_SPACE = re.compile(r"\s+")


def osis_to_text(markup: str) -> str:
    """The running text of one verse's OSIS markup: notes and titles dropped, tags stripped,
    whitespace collapsed."""
    text = _TAG.sub("", _DROP.sub("", markup))
    text = text.replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    return _SPACE.sub(" ", text.replace("&quot;", '"').replace("&apos;", "'")).strip()


def label_verses(slots: list[str]) -> dict[str, str]:
    """{"Book.chapter.verse": plain text} from one testament's slots.

    A slot holding a `<chapter osisID=...>` starts a chapter; the slots after it are its
    verses, 1, 2, ..., up to the next chapter or book slot. A book's start
    (`<div type="book" sID=...>`) names no verse. Empty verses (in a translation that omits
    one) are left out.
    """
    verses: dict[str, str] = {}
    chapter, number = None, 0
    for slot in slots[2:]:  # module header and testament heading
        found = _CHAPTER.search(slot)
        if found:
            chapter, number = found.group(1), 0
            continue
        if _BOOK.search(slot):
            chapter = None  # the intro of the next book, before its first chapter slot
            continue
        if chapter is None:
            continue
        number += 1
        text = osis_to_text(slot)
        if text:
            verses[f"{chapter}.{number}"] = text
    return verses


def read_module(folder: str | Path) -> dict[str, str]:
    """All labelled verses of a zText Bible module (both testaments that exist)."""
    folder = Path(folder)
    verses: dict[str, str] = {}
    found = False
    for testament in ("ot", "nt"):
        if (folder / f"{testament}.bzv").is_file():
            found = True
            verses.update(label_verses(read_ztext(folder, testament)))
    if not found:
        raise AttnlabError(f"no zText module at {folder} (no ot.bzv or nt.bzv)")
    return verses


def align(source: dict[str, str], target: dict[str, str]) -> list[tuple[str, str, str]]:
    """(verse id, source text, target text) for every verse both translations have."""
    return sorted((k, source[k], target[k]) for k in source.keys() & target.keys())


def _build(quiet: bool) -> list[tuple[str, str, str]]:
    with tempfile.TemporaryDirectory(prefix="attnlab-sword-") as tmp:
        for package in (KJV, SPARV):
            unpack_deb(fetch_deb(package, quiet=quiet), Path(tmp))
        english = read_module(Path(tmp) / _MODULES / "engKJV2006eb")
        spanish = read_module(Path(tmp) / _MODULES / "spaRV1909eb")
    return align(english, spanish)


KJV_RV1909 = register_pairs(PairDataset(
    name="kjv-rv1909",
    description="English -> Spanish Bible verses: KJV 1769 / Reina-Valera 1909 (~31k pairs)",
    source=f"{KJV.source} + {SPARV.source} (SWORD zText)",
    license="public domain (both texts)",
    build=_build,
    pins=(KJV.sha256, SPARV.sha256),
    metrics=("bleu",),
    baseline_name="copy",
    baseline=copy_source,
    val_size=1000,
    test_size=1000,
))
