"""Sentence-level sentiment: the movie-review snippets of VADER (Hutto & Gilbert, ICWSM 2014).

10,605 sentences from Rotten Tomatoes reviews (Pang & Lee, 2004), each rated -4..4 by about 20
people; the file holds `id <TAB> mean rating <TAB> sentence`. They travel in the vaderSentiment
3.3.2 source distribution (not its wheel) as additional_resources/hutto_ICWSM_2014.tar.gz, so
the ordinary `pip download` (sha256 pinned) is the only network access, as for the corpora.

Binary labels: mean rating > 0.5 is positive (1), < -0.5 negative (0); the near-neutral rest is
dropped, and of two identical sentences only the first is kept (two pairs; a copy in train and
test would leak). That leaves 10,041 sentences, about half positive, split 80/10/10 into
train/val/test by a seeded permutation. The split is cached as JSON under
`cache_dir()/sentiment/` with a meta.json holding each file's sha256; a cached file that does
not match is refused.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlab.data.corpora import PinnedArchive, cache_dir, fetch_archive
from attnlab.errors import AttnlabError, unknown
from attnlab.files import atomic_write, read_text_file, sha256_file

SPLITS = ("train", "val", "test")
LABELS = ("negative", "positive")
#: A sentence is positive above +THRESHOLD, negative below -THRESHOLD, dropped in between.
THRESHOLD = 0.5
FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test
# Bump when parsing, binarizing or splitting changes, so cached splits of older code are rebuilt.
_VERSION = 1


@dataclass(frozen=True)
class SentimentSource(PinnedArchive):
    """A named sentiment set: a `corpora.PinnedArchive` (here a source distribution) and where
    the ratings sit inside it.

    Args:
        inner: the tar.gz inside the sdist that holds the ratings.
        member: the ratings file inside `inner`.
        sdist: fetch the source distribution, not a wheel (the wheel lacks the data).
    """

    inner: str
    member: str
    sdist: bool = True  # `corpora.fetch_archive` asks pip for the source distribution


VADER_MOVIES = SentimentSource(
    name="vader-movies",
    description="10,605 movie-review sentences rated -4..4 (VADER, Hutto & Gilbert 2014); "
                "binary: > 0.5 positive, < -0.5 negative",
    source="vaderSentiment==3.3.2",
    license="MIT (Copyright 2016 C.J. Hutto)",
    archive="vaderSentiment-3.3.2.tar.gz",
    sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
    inner="vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
    member="hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
)

#: Every named sentiment set, by name. Tests may swap an entry with monkeypatch.
SENTIMENT_SETS: dict[str, SentimentSource] = {s.name: s for s in (VADER_MOVIES,)}


@dataclass(frozen=True)
class TextClassificationData:
    """Sentences with one label each, in train / val / test splits.

    Attributes:
        name: where the data came from (a set name or a file path).
        texts: split -> list of sentences.
        labels: split -> (N,) int64 array in [0, num_classes).
        label_names: the name of each label id (0 = negative, 1 = positive).
        meta: how the data was made (source, seed, sizes, checksums).
    """

    name: str
    texts: dict[str, list[str]]
    labels: dict[str, np.ndarray]
    label_names: tuple[str, ...]
    meta: dict

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def majority_accuracy(self, split: str = "test") -> float:
        """Accuracy of always answering the training set's most frequent label."""
        majority = np.bincount(self.labels["train"], minlength=self.num_classes).argmax()
        return float((self.labels[split] == majority).mean())


# -- parsing -------------------------------------------------------------------------------------
def parse_ratings(text: str, *, where: str = "ratings") -> list[tuple[str, float, str]]:
    """(id, mean rating, sentence) of every line `id <TAB> rating <TAB> sentence` of `text`.

    Blank lines are skipped; any other malformed line is an error naming its line number.

    Args:
        text: the file's text (CRLF or LF line ends).
        where: the file's name, for errors.
    """
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 3 or not parts[2].strip():
                raise ValueError
            rating = float(parts[1])
            if not math.isfinite(rating):  # nan would fall outside both label ranges
                raise ValueError
        except ValueError:
            raise AttnlabError(f"{where} line {n}: expected 'id<TAB>rating<TAB>sentence', got "
                               f"{line[:60]!r}") from None
        rows.append((parts[0].strip(), rating, parts[2].strip()))
    if not rows:
        raise AttnlabError(f"{where} holds no rated sentences")
    return rows


def binarize(rows: list[tuple[str, float, str]],
             threshold: float = THRESHOLD) -> tuple[list[str], np.ndarray]:
    """Sentences and labels: rating > threshold -> 1, < -threshold -> 0, the rest dropped, and
    a sentence already seen dropped too. Keeps the order of `rows`."""
    texts, labels, seen = [], [], set()
    for _, rating, sentence in rows:
        if -threshold <= rating <= threshold or sentence in seen:
            continue
        seen.add(sentence)
        texts.append(sentence)
        labels.append(int(rating > threshold))
    return texts, np.asarray(labels, dtype=np.int64)


def split_indices(n: int, seed: int, fractions=FRACTIONS) -> dict[str, np.ndarray]:
    """Disjoint index arrays covering range(n): a seeded permutation cut by `fractions`."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(fractions[0] * n)
    n_val = round(fractions[1] * n)
    cuts = {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}
    return {s: np.sort(idx) for s, idx in cuts.items()}


def _split(name: str, texts: list[str], labels: np.ndarray, seed: int) -> tuple[dict, dict]:
    idx = split_indices(len(texts), seed)
    if any(len(i) == 0 for i in idx.values()):
        raise AttnlabError(f"{name}: {len(texts)} labelled sentences are too few for a "
                           f"train/val/test split; give at least 10")
    return ({s: [texts[i] for i in ix] for s, ix in idx.items()},
            {s: labels[ix] for s, ix in idx.items()})


# -- fetching and caching ------------------------------------------------------------------------
def read_source(src: SentimentSource, *, quiet: bool = False) -> str:
    """The ratings file of `src`, read out of its pinned sdist (downloaded once into the cache)."""
    archive = fetch_archive(src, kind="dataset", quiet=quiet)
    try:
        with tarfile.open(archive) as outer:
            inner = outer.extractfile(src.inner)
            with tarfile.open(fileobj=io.BytesIO(inner.read())) as tf:
                return tf.extractfile(src.member).read().decode("utf-8")
    except (KeyError, AttributeError, tarfile.TarError) as e:
        raise AttnlabError(f"{archive.name} lacks {src.inner}:{src.member} for '{src.name}' "
                           f"({e}); delete it and retry") from None


def list_sentiment_sets() -> list[SentimentSource]:
    """All named sentiment sets, sorted by name."""
    return [SENTIMENT_SETS[n] for n in sorted(SENTIMENT_SETS)]


def load_sentiment(source: str | Path = "vader-movies", *, seed: int = 0,
                   quiet: bool = False) -> TextClassificationData:
    """Binary sentence sentiment in fixed train / val / test splits.

    Args:
        source: a set name (`vader-movies`, the default) or a file in the same format
            (`id <TAB> mean rating <TAB> sentence` per line, ratings signed), which is
            binarized and split the same way (not cached).
        seed: seed of the 80/10/10 split; the same seed always gives the same split.
        quiet: no download message.

    Returns:
        `TextClassificationData`: `.texts[split]` (list of str), `.labels[split]` (int64
        array, 1 = positive), `.label_names`, `.meta`.
    """
    path = Path(source).expanduser()
    if path.is_file():
        raw = read_text_file(path, "the ratings file")
        texts, labels = binarize(parse_ratings(raw, where=str(path)))
        by_split, lab = _split(str(path), texts, labels, seed)
        meta = {"name": str(path), "seed": seed, "threshold": THRESHOLD,
                "sizes": {s: len(t) for s, t in by_split.items()}}
        return TextClassificationData(str(path), by_split, lab, LABELS, meta)
    if str(source) not in SENTIMENT_SETS:
        if path.exists():
            raise AttnlabError(f"{path} is not a regular file; give a ratings file")
        raise unknown("sentiment data set (or no such file)", str(source), SENTIMENT_SETS)
    src = SENTIMENT_SETS[str(source)]
    folder = cache_dir() / "sentiment" / f"{src.name}-seed{seed}-v{_VERSION}"
    meta_path = folder / "meta.json"
    if not _cached_ok(src, meta_path):
        _prepare(src, folder, seed, quiet=quiet)
    meta = json.loads(meta_path.read_text("utf-8"))
    texts, labels = {}, {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        if sha256_file(path) != meta["files"][path.name]:
            raise AttnlabError(f"{path} does not match its checksum in meta.json; delete "
                               f"{folder} to rebuild it")
        data = json.loads(path.read_text("utf-8"))
        texts[split] = data["texts"]
        labels[split] = np.asarray(data["labels"], dtype=np.int64)
    return TextClassificationData(src.name, texts, labels, LABELS, meta)


def _cached_ok(src: SentimentSource, meta_path: Path) -> bool:
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        return meta.get("archive_sha256") == src.sha256 and set(meta["files"]) == {
            f"{s}.json" for s in SPLITS}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def _prepare(src: SentimentSource, folder: Path, seed: int, *, quiet: bool) -> None:
    rows = parse_ratings(read_source(src, quiet=quiet), where=src.member)
    texts, labels = binarize(rows)
    by_split, lab = _split(src.name, texts, labels, seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split in SPLITS:
        path = folder / f"{split}.json"
        atomic_write(path, json.dumps({"texts": by_split[split],
                                       "labels": lab[split].tolist()}, ensure_ascii=False))
        files[path.name] = sha256_file(path)
    meta = {"name": src.name, "source": src.source, "license": src.license,
            "archive": src.archive, "archive_sha256": src.sha256, "member": src.member,
            "seed": seed, "threshold": THRESHOLD, "rated": len(rows),
            "sizes": {s: len(by_split[s]) for s in SPLITS},
            "positive": {s: int(lab[s].sum()) for s in SPLITS}, "files": files}
    # meta.json goes last: a kill before it leaves files that the next call rebuilds.
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
