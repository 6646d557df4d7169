"""attnlab.data.sentiment: the split sizes round to the nearest
row, and a cached split made from another archive (other pinned sha256) is rebuilt."""

import json

from attnlab.data import corpora, sentiment
from attnlab.data.sentiment import load_sentiment, split_indices
from tests.data.test_sentiment import fake_sdist  # noqa: F401  (fixture)


def test_split_sizes_round_to_the_nearest_row():
    # 10,041 rows (the real set): 0.8 * n = 8032.8 -> 8033, 0.1 * n = 1004.1 -> 1004, rest 1004
    idx = split_indices(10041, 0)
    assert [len(idx[s]) for s in ("train", "val", "test")] == [8033, 1004, 1004]


def test_a_cache_made_from_another_archive_is_rebuilt(fake_sdist, monkeypatch):  # noqa: F811
    first = load_sentiment("vader-movies")
    folder = corpora.cache_dir() / "sentiment" / "vader-movies-seed0-v1"
    meta = json.loads((folder / "meta.json").read_text())
    meta["archive_sha256"] = "0" * 64  # as if written from an older pinned archive
    (folder / "meta.json").write_text(json.dumps(meta))
    calls = []
    real = sentiment._prepare
    monkeypatch.setattr(sentiment, "_prepare", lambda *a, **k: (calls.append(1), real(*a, **k)))
    again = load_sentiment("vader-movies")
    assert calls == [1] and again.texts == first.texts
    assert again.meta["archive_sha256"] == fake_sdist.sha256


def test_an_empty_rating_is_a_malformed_line():
    import pytest

    from attnlab.data.sentiment import parse_ratings
    from attnlab.errors import AttnlabError

    with pytest.raises(AttnlabError, match="ratings line 2: expected"):
        parse_ratings("1\t1.0\tfine\n2\t\tno rating\n")
