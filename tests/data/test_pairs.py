"""Pair datasets: the zText reader and verse alignment, the Debian description parser, the
pinned apt fetch (from hand-placed files and fixture .debs, no network), seeded splits."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from attnlab.data import debian, pairs, summarization, translation
from attnlab.data.debian import DebianIndex, DebianPackage, fetch_deb, fetch_index
from attnlab.data.pairs import load_pairs, seeded_split
from attnlab.data.summarization import lead_sentence, parse_descriptions
from attnlab.data.translation import align, label_verses, osis_to_text, read_module, read_ztext
from attnlab.errors import AttnlabError

# --------------------------------------------------------------------------------------------
# zText fixture: a writer that follows the format description in attnlab.data.translation


def write_ztext(folder: Path, testament: str, slots: list[str], per_block: int = 3) -> None:
    """bzs/bzv/bzz files holding `slots`, `per_block` slots per zlib block."""
    folder.mkdir(parents=True, exist_ok=True)
    bzs, bzv, bzz = bytearray(), bytearray(), bytearray()
    for start in range(0, len(slots), per_block):
        raw = bytearray()
        for text in slots[start:start + per_block]:
            data = text.encode("utf-8")
            bzv += struct.pack("<IIH", len(bzs) // 12, len(raw), len(data))
            raw += data
        packed = zlib.compress(bytes(raw))
        bzs += struct.pack("<III", len(bzz), len(packed), len(raw))
        bzz += packed
    (folder / f"{testament}.bzs").write_bytes(bytes(bzs))
    (folder / f"{testament}.bzv").write_bytes(bytes(bzv))
    (folder / f"{testament}.bzz").write_bytes(bytes(bzz))


def bible(words: dict[str, str]) -> list[str]:
    """Slots of a two-book testament in KJV layout; verse texts come from `words` by id."""
    slots = ["", '<milestone type="x-importer"/>']
    for book, chapters in (("Gen", (2, 1)), ("Exod", (3,))):
        slots.append(f'<div canonical="true" osisID="{book}" sID="g1" type="book"/> '
                     f'<title type="main">{book.upper()}</title>')
        for c, n in enumerate(chapters, 1):
            slots.append(f'<chapter n="{c}" osisID="{book}.{c}" sID="{book}.{c}"/>')
            for v in range(1, n + 1):
                text = words.get(f"{book}.{c}.{v}", "")
                if v == n:  # the end milestones close the last verse of a chapter / book
                    text += f' <chapter eID="{book}.{c}"/>'
                    if c == len(chapters):
                        text += f' <div eID="g1" osisID="{book}" type="book"/>'
                slots.append(text)
    return slots


EN = {"Gen.1.1": 'In the <w lemma="strong:H7225">beginning</w>.',
      "Gen.1.2": 'And the earth<note type="x-footnote">Or, land</note> was void.',
      "Gen.2.1": "Thus the heavens.", "Exod.1.1": "Now these &amp; those.",
      "Exod.1.2": "Reuben.", "Exod.1.3": "Issachar."}
ES = {"Gen.1.1": "EN el principio.", "Gen.1.2": "Y la tierra.", "Gen.2.1": "Y fueron.",
      "Exod.1.1": "ESTOS son.", "Exod.1.3": "Issachar."}  # Exod.1.2 missing


def test_read_ztext_round_trips_slots_across_blocks(tmp_path):
    slots = bible(EN)
    write_ztext(tmp_path / "m", "ot", slots, per_block=4)
    assert read_ztext(tmp_path / "m", "ot") == slots


def test_label_verses_uses_chapter_and_book_markup():
    verses = label_verses(bible(EN))
    assert verses == {"Gen.1.1": "In the beginning.", "Gen.1.2": "And the earth was void.",
                      "Gen.2.1": "Thus the heavens.", "Exod.1.1": "Now these & those.",
                      "Exod.1.2": "Reuben.", "Exod.1.3": "Issachar."}


def test_osis_to_text_drops_notes_and_titles_keeps_words():
    assert osis_to_text('<title type="psalm">A Psalm</title>LORD, <w a="1">how</w>'
                        '<note n="a">note</note>  are they!') == "LORD, how are they!"


def test_read_module_and_align_pair_common_verses(tmp_path):
    write_ztext(tmp_path / "en", "ot", bible(EN))
    write_ztext(tmp_path / "es", "ot", bible(ES), per_block=2)
    triples = align(read_module(tmp_path / "en"), read_module(tmp_path / "es"))
    assert [t[0] for t in triples] == ["Exod.1.1", "Exod.1.3", "Gen.1.1", "Gen.1.2", "Gen.2.1"]
    assert triples[2] == ("Gen.1.1", "In the beginning.", "EN el principio.")


def test_damaged_module_is_one_clear_error(tmp_path):
    with pytest.raises(AttnlabError, match="no zText module"):
        read_module(tmp_path)
    write_ztext(tmp_path / "m", "nt", bible(EN))
    (tmp_path / "m" / "nt.bzz").write_bytes(b"not zlib at all" * 10)
    with pytest.raises(AttnlabError, match="not zlib data"):
        read_ztext(tmp_path / "m", "nt")
    (tmp_path / "m" / "nt.bzv").write_bytes(b"123")
    with pytest.raises(AttnlabError, match="not whole index entries"):
        read_ztext(tmp_path / "m", "nt")


def _deb(tmp_path: Path, name: str, module: str, slots: list[str]) -> Path:
    root = tmp_path / f"pkg-{name}"
    write_ztext(root / "usr/share/sword/modules/texts/ztext" / module, "ot", slots)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@t>\n"
        f"Description: fixture\n")
    out = tmp_path / f"{name}.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(out)],
                   check=True, capture_output=True)
    return out


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_translation_build_from_pinned_debs_without_network(tmp_path, monkeypatch,
                                                            _attnlab_home):
    """Fixture .debs placed in the cache under their pinned names: fetch_deb never runs apt,
    dpkg-deb unpacks them, and the verses come out aligned."""
    for attr, name, module, words in (("KJV", "sword-text-kjv", "engKJV2006eb", EN),
                                      ("SPARV", "sword-text-sparv", "spaRV1909eb", ES)):
        deb = _deb(tmp_path, name, module, bible(words))
        pkg = DebianPackage(name, "1.0-1", _sha(deb))
        (_attnlab_home / "downloads").mkdir(parents=True, exist_ok=True)
        shutil.copy(deb, _attnlab_home / "downloads" / pkg.archive)
        monkeypatch.setattr(translation, attr, pkg)
    which = shutil.which
    monkeypatch.setattr(debian.shutil, "which",  # no apt needed; dpkg-deb unpacks
                        lambda tool: None if tool == "apt-get" else which(tool))
    triples = translation._build(True)
    assert len(triples) == 5 and triples[-1] == ("Gen.2.1", "Thus the heavens.", "Y fueron.")


def test_fetch_refuses_wrong_bytes_and_says_how_without_apt(_attnlab_home, monkeypatch):
    pkg = DebianPackage("sword-text-kjv", "9.9-1", "0" * 64)
    (_attnlab_home / "downloads").mkdir(parents=True, exist_ok=True)
    (_attnlab_home / "downloads" / pkg.archive).write_bytes(b"tampered")
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)
    with pytest.raises(AttnlabError, match=r"apt-get not found.*put sword-text-kjv_9\.9-1_all"
                                           r"\.deb .* by hand"):
        fetch_deb(pkg, quiet=True)
    with pytest.raises(AttnlabError, match="apt-get not found"):
        fetch_index(DebianIndex("bookworm", "main/i18n/Translation-en", "0" * 64), quiet=True)


def test_fetch_keeps_the_download_only_when_the_checksum_matches(tmp_path):
    got = tmp_path / "got.deb"
    got.write_bytes(b"abc")
    pkg = DebianPackage("x", "1", "0" * 64)
    with pytest.raises(AttnlabError, match="checksum mismatch for Debian package x=1"):
        debian._keep(got, pkg, tmp_path / "kept.deb")
    assert not (tmp_path / "kept.deb").exists()
    ok = dataclasses.replace(pkg, sha256=_sha(got))
    assert debian._keep(got, ok, tmp_path / "kept.deb").read_bytes() == b"abc"


# --------------------------------------------------------------------------------------------
# Debian descriptions

TRANSLATION = """Package: 0ad
Description-md5: aaa
Description-en: Real-time strategy game of ancient warfare
 0 A.D. is a free, open-source, cross-platform
 real-time strategy game. In short, it is a war game.
 .
 This package contains the game.

Package: 0ad-data
Description-md5: aaa
Description-en: Real-time strategy game of ancient warfare
 0 A.D. is a free, open-source, cross-platform
 real-time strategy game. In short, it is a war game.
 .
 This package contains the game.

Package: tool
Description-md5: bbb
Description-en: command-line tool
 Features:
  * lists
  * more lists
 .
 Done right!

Package: short
Description-md5: ccc
Description-en: no long description

Package: tiny
Description-md5: ddd
Description-en: tiny
 Too short.
"""


def test_parse_descriptions_keeps_paragraphs_and_verbatim_lines():
    got = parse_descriptions(TRANSLATION)
    assert [m for m, _, _ in got] == ["aaa", "aaa", "bbb", "ddd"]  # "short" has no long text
    assert got[0][1:] == ("Real-time strategy game of ancient warfare",
                          "0 A.D. is a free, open-source, cross-platform real-time strategy "
                          "game. In short, it is a war game.\nThis package contains the game.")
    assert got[2][2] == "Features:\n* lists\n* more lists\nDone right!"


def test_lead_sentence_baseline():
    assert lead_sentence("0 A.D. is a game. In short, it is war.") == "0 A.D. is a game"
    assert lead_sentence("Features:\n* lists") == "Features:"
    assert lead_sentence("No period at all") == "No period at all"


def test_summarization_build_dedupes_and_filters(_attnlab_home, monkeypatch):
    data = TRANSLATION.encode()
    pin = DebianIndex("bookworm", "main/i18n/Translation-en", hashlib.sha256(data).hexdigest())
    (_attnlab_home / "downloads").mkdir(parents=True, exist_ok=True)
    (_attnlab_home / "downloads" / pin.archive).write_bytes(data)
    monkeypatch.setattr(summarization, "TRANSLATION_EN", pin)
    monkeypatch.setattr(debian.shutil, "which", lambda tool: None)  # the cached file suffices
    triples = summarization._build(True)
    assert [(m, t) for m, _, t in triples] == [
        ("aaa", "Real-time strategy game of ancient warfare"), ("bbb", "command-line tool")]


# --------------------------------------------------------------------------------------------
# splits


def test_seeded_split_is_fixed_disjoint_and_complete():
    a, b = seeded_split(100, 10, 15), seeded_split(100, 10, 15)
    for x, y in zip(a, b, strict=True):
        assert (x == y).all()
    train, val, test = a
    assert (len(train), len(val), len(test)) == (75, 10, 15)
    assert sorted({*train, *val, *test}) == list(range(100))
    assert not (seeded_split(100, 10, 15, seed=1)[2] == test).all()
    with pytest.raises(AttnlabError, match="too few"):
        seeded_split(20, 10, 10)


def test_load_pairs_from_tsv_is_deterministic(tmp_path):
    path = tmp_path / "p.tsv"
    path.write_text("".join(f"src {i}\ttgt {i}\n" for i in range(50)))
    a, b = load_pairs(str(path)), load_pairs(str(path))
    assert a.train == b.train and a.val == b.val and a.test == b.test
    assert (len(a.train), len(a.val), len(a.test)) == (40, 5, 5)
    assert sorted(a.train + a.val + a.test) == sorted((f"src {i}", f"tgt {i}")
                                                     for i in range(50))
    assert a.metrics == ("bleu", "rouge") and a.baseline("x y") == "x y"


def test_bad_pair_sources_are_one_clear_line(tmp_path):
    with pytest.raises(AttnlabError, match="did you mean 'kjv-rv1909'"):
        load_pairs("kjv-rv1908")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tb\nonly one field\n")
    with pytest.raises(AttnlabError, match=r"line 2: expected 'source<TAB>target'"):
        load_pairs(str(bad))
    bad.write_bytes(b"\xff\xfe\tb\n")
    with pytest.raises(AttnlabError, match="not UTF-8"):
        load_pairs(str(bad))


def test_registry_lists_both_datasets():
    names = [d.name for d in pairs.list_pair_datasets()]
    assert names == ["debian-descriptions", "kjv-rv1909"]
