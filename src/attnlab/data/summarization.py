"""Debian package descriptions: the long description -> its one-line synopsis.

Source: Debian 12 ("bookworm") `main/i18n/Translation-en`, the file that carries the English
descriptions of every package in the release (the Packages index carries only the synopsis),
fetched by apt and pinned by sha256. Why this file: it is the whole description corpus in one
file, apt verifies it against the release's signed InRelease, and bookworm's main suite has
reached its last point releases (12.x), so the pinned bytes stay valid; were the archive to
change it, the checksum refuses the new file with one clear line instead of silently training
on other data. `apt-get update`'s own lists would follow whatever the machine's sources say and
are never pinned, so they are not used.

Each record is

    Package: 0ad
    Description-md5: d943033b...
    Description-en: Real-time strategy game of ancient warfare      <- synopsis (target)
     0 A.D. (pronounced "zero ey-dee") is a free, open-source, ...  <- long description
     .                                                              <- paragraph break

Identical descriptions (one per Description-md5; -dev/-doc siblings often share one) are kept
once, so no description is in two splits. Departure: sibling packages with near-identical
descriptions can still fall into different splits; the lead-sentence baseline sees the same
test set.
"""

from __future__ import annotations

import re

from attnlab.data.debian import DebianIndex, fetch_index
from attnlab.data.pairs import PairDataset, register_pairs
from attnlab.errors import AttnlabError

TRANSLATION_EN = DebianIndex(
    suite="bookworm", path="main/i18n/Translation-en",
    sha256="62f59c3cdca9786e4f7adf9002f9f5729a684adcb4667e58e448dec9b5a46c7f")

MIN_WORDS = 5  # long descriptions shorter than this are not a summarization input


def parse_descriptions(text: str) -> list[tuple[str, str, str]]:
    """(Description-md5, synopsis, long description) of every record of a Translation file.

    The long description's paragraphs (" ." lines) become newlines, the lines of one paragraph
    are joined with spaces; a verbatim line (two leading spaces) stays a line of its own.
    Records without a long description are skipped.

    Args:
        text: the Translation-xx file.
    """
    out: list[tuple[str, str, str]] = []
    for record in text.split("\n\n"):
        md5, synopsis, lines = None, None, []
        for line in record.split("\n"):
            if line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
            elif line.startswith("Description-") and synopsis is None:
                synopsis = line.split(":", 1)[1].strip()
            elif line.startswith(" ") and synopsis is not None:
                lines.append(line)
        if synopsis is None:
            continue
        if md5 is None:
            raise AttnlabError(f"a description record has no Description-md5: {record[:60]!r}")
        long = _long_description(lines)
        if long:
            out.append((md5, synopsis, long))
    return out


def _long_description(lines: list[str]) -> str:
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        body = line[1:]
        if body.strip() == ".":
            paragraphs.append([])
        elif body.startswith(" "):  # verbatim (lists, code): a line of its own
            paragraphs[-1].append("\n" + body.strip())
        else:
            paragraphs[-1].append(body.strip())
    joined = [" ".join(p).replace(" \n", "\n").strip() for p in paragraphs]
    return "\n".join(p for p in joined if p)


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'])|\n")


def lead_sentence(description: str) -> str:
    """The lead-sentence baseline: the long description's first sentence (up to the first
    '.', '!' or '?' followed by a space and a capital, digit or quote, or the first line
    break), without its final period, as a synopsis is written."""
    first = _SENTENCE_END.split(description.strip(), maxsplit=1)[0].strip()
    return first[:-1] if first.endswith(".") else first


def _build(quiet: bool) -> list[tuple[str, str, str]]:
    text = fetch_index(TRANSLATION_EN, quiet=quiet).read_text("utf-8")
    seen: set[str] = set()
    triples = []
    for md5, synopsis, long in parse_descriptions(text):
        if md5 in seen or len(long.split()) < MIN_WORDS:
            continue
        seen.add(md5)
        triples.append((md5, long, synopsis))
    return triples


DEBIAN_DESCRIPTIONS = register_pairs(PairDataset(
    name="debian-descriptions",
    description="Debian 12 package long descriptions -> one-line synopsis (~61k pairs)",
    source=f"{TRANSLATION_EN.source} (apt)",
    license="each package's own (DFSG-free) license",
    build=_build,
    pins=(TRANSLATION_EN.sha256,),
    metrics=("rouge",),
    baseline_name="lead",
    baseline=lead_sentence,
    val_size=1000,
    test_size=1000,
))
