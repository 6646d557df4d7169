"""Named (source, target) text-pair datasets with fixed seeded splits, cached with checksums.

A `PairDataset` says where its pinned inputs come from (Debian packages or index files, see
`attnlab.data.debian`), how they become (id, source, target) triples, which metrics judge a
model on it and which trivial baseline it is compared with. `load_pairs` is the one entry
point: a dataset name, or a UTF-8 TSV file of `source<TAB>target` lines (tests, own data).

Splits are a permutation of the pairs sorted by id, drawn from a fixed seed: the first
`test_size` are the test set, the next `val_size` validation, the rest training; the same
inputs give the same splits on every machine.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from attnlab.errors import AttnlabError, did_you_mean, unknown
from attnlab.files import atomic_write, sha256_bytes, sha256_file

# Bump when the extraction of any dataset changes, so cached pairs made by older code are rebuilt.
_PREPARE_VERSION = 1
SPLIT_SEED = 20170612  # "Attention Is All You Need" on arXiv


def copy_source(source: str) -> str:
    """The copy-source baseline: the output is the input, unchanged."""
    return source


@dataclass(frozen=True)
class PairDataset:
    """A named pair dataset.

    Args:
        name: the name users type (`data.source`).
        description: one line for listings.
        source: where its inputs come from (pinned package versions).
        license: license of the texts.
        build: quiet -> [(id, source text, target text)] from the pinned inputs.
        pins: sha256 of every pinned input (part of the cache key).
        metrics: metric families reported: "bleu" (BLEU + chrF) and/or "rouge".
        baseline_name: the trivial baseline's name in metrics ("copy", "lead").
        baseline: source text -> the baseline's output.
        val_size, test_size: held-out pairs.
    """

    name: str
    description: str
    source: str
    license: str
    build: Callable[[bool], list[tuple[str, str, str]]]
    pins: tuple[str, ...]
    metrics: tuple[str, ...]
    baseline_name: str
    baseline: Callable[[str], str]
    val_size: int = 1000
    test_size: int = 1000


#: Every named pair dataset, by name; filled by attnlab.data.translation and .summarization.
PAIR_DATASETS: dict[str, PairDataset] = {}


def register_pairs(dataset: PairDataset) -> PairDataset:
    PAIR_DATASETS[dataset.name] = dataset
    return dataset


def list_pair_datasets() -> list[PairDataset]:
    """All named pair datasets, sorted by name."""
    _load_registry()
    return [PAIR_DATASETS[n] for n in sorted(PAIR_DATASETS)]


def _load_registry() -> None:
    # importing them registers their datasets
    import attnlab.data.summarization
    import attnlab.data.translation  # noqa: F401


@dataclass
class PairSplits:
    """Train / val / test lists of (source, target), with the dataset's metrics and baseline.

    Args:
        name: dataset name or file path.
        train, val, test: (source, target) pairs.
        metrics: metric families ("bleu", "rouge").
        baseline_name: e.g. "copy", "lead".
        baseline: source -> baseline output.
        sha256: checksum of the prepared pairs (all splits), for logs.
    """

    name: str
    train: list[tuple[str, str]]
    val: list[tuple[str, str]]
    test: list[tuple[str, str]]
    metrics: tuple[str, ...]
    baseline_name: str
    baseline: Callable[[str], str] = field(repr=False)
    sha256: str = ""

    def split(self, name: str) -> list[tuple[str, str]]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def seeded_split(n: int, val_size: int, test_size: int,
                 seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, test) row indices of a seeded permutation of range(n).

    Args:
        n: number of rows (sorted by id).
        val_size, test_size: held-out rows.
        seed: the permutation's seed.
    """
    if val_size + test_size >= n:
        raise AttnlabError(f"{n} pairs are too few for {val_size} validation and {test_size} "
                           f"test pairs; give more pairs")
    order = np.random.default_rng(seed).permutation(n)
    test, val = order[:test_size], order[test_size:test_size + val_size]
    return np.sort(order[test_size + val_size:]), np.sort(val), np.sort(test)


def pairs_path(name: str) -> Path:
    from attnlab.data.corpora import cache_dir

    return cache_dir() / "pairs" / f"{name}.jsonl"


def prepare_pairs(name: str, *, quiet: bool = False) -> Path:
    """Fetch and extract dataset `name` once; later calls return the cached JSON-lines file
    (one [id, source, target] array a line, sorted by id), trusted only while its sha256 and
    the pins it was made from match the record beside it."""
    _load_registry()
    if name not in PAIR_DATASETS:
        raise unknown("pair dataset", name, PAIR_DATASETS)
    ds = PAIR_DATASETS[name]
    path, meta_path = pairs_path(name), pairs_path(name).with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        if (meta.get("pins") == list(ds.pins) and meta.get("prepare_version") == _PREPARE_VERSION
                and sha256_file(path) == meta.get("sha256")):
            return path
    except (OSError, ValueError, AttributeError):
        pass
    triples = sorted(ds.build(quiet))
    data = "".join(json.dumps(list(t), ensure_ascii=False) + "\n" for t in triples).encode()
    atomic_write(path, data)
    atomic_write(meta_path, json.dumps({
        "name": name, "source": ds.source, "license": ds.license, "pins": list(ds.pins),
        "pairs": len(triples), "sha256": sha256_bytes(data), "prepare_version": _PREPARE_VERSION,
    }, indent=2) + "\n")
    return path


def _read_tsv(path: Path) -> list[tuple[str, str, str]]:
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError:
        raise AttnlabError(f"{path} is not UTF-8 text; give a UTF-8 TSV of source<TAB>target "
                           f"lines") from None
    except OSError as e:
        raise AttnlabError(f"cannot read {path}: {e.strerror or e}") from None
    triples = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip() or not parts[1].strip():
            raise AttnlabError(f"{path} line {i}: expected 'source<TAB>target' with both "
                               f"non-empty, got {len(parts)} field(s)")
        triples.append((f"{i:09d}", parts[0].strip(), parts[1].strip()))
    if not triples:
        raise AttnlabError(f"{path} holds no pairs; give source<TAB>target lines")
    return triples


def load_pairs(source: str, *, quiet: bool = False) -> PairSplits:
    """The seeded train / val / test splits of a named dataset or a TSV file.

    A TSV file (`source<TAB>target` per line) holds out 10% each for validation and test
    (at least one pair each), and is judged with every metric and the copy-source baseline.

    Args:
        source: a name from `list_pair_datasets()`, or a path to a .tsv file.
        quiet: no progress messages while fetching.
    """
    _load_registry()
    path = Path(source).expanduser()
    if source in PAIR_DATASETS and not path.exists():
        ds = PAIR_DATASETS[source]
        prepared = prepare_pairs(source, quiet=quiet)
        triples = [tuple(json.loads(line)) for line in prepared.read_text("utf-8").splitlines()]
        digest = sha256_file(prepared)
        val_size, test_size = ds.val_size, ds.test_size
        metrics, base_name, base = ds.metrics, ds.baseline_name, ds.baseline
    elif path.is_file():
        triples = _read_tsv(path)
        digest = sha256_file(path)
        held = max(1, len(triples) // 10)
        val_size = test_size = held
        metrics, base_name, base = ("bleu", "rouge"), "copy", copy_source
    else:
        raise AttnlabError(f"no such pair dataset or TSV file: '{source}'"
                           f"{did_you_mean(str(source), PAIR_DATASETS)}; give one of "
                           f"{', '.join(sorted(PAIR_DATASETS))} or a source<TAB>target .tsv file")
    train, val, test = seeded_split(len(triples), val_size, test_size)
    rows = [(s, t) for _, s, t in triples]
    return PairSplits(name=str(source), train=[rows[i] for i in train],
                      val=[rows[i] for i in val], test=[rows[i] for i in test],
                      metrics=tuple(metrics), baseline_name=base_name, baseline=base,
                      sha256=digest)
