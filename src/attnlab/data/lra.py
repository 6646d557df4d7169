"""Long-range classification tasks in the spirit of Long Range Arena (Tay et al., 2021), small
enough to train on two CPU cores and generated here from a seed, so anyone gets the same data.

`lra-listops` (Nangia & Bowman, 2018; LRA's ListOps): evaluate a nested prefix expression of
MIN, MAX, MED (median) and SM (sum modulo 10) over digits, written as tokens

    [MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]   ->   5

Ten classes. Expressions are drawn as LRA draws them (an argument is a digit with probability
0.75, else a sub-expression; 2 to 10 arguments; depth at most 10) and kept when they are
`length/4` to `length` tokens long (LRA keeps 500 to 2,000); the rest of a row is padding.
Departures from LRA: MED of an even count is the lower median (LRA's rounds the mean of the two
middle values down); no separate brackets for the operators' opening. An earlier version grew
each expression to fill a token budget, which left no plain digit above the bottom levels:
every label then needed the whole tree evaluated, and full attention stayed at the majority
class for 900 steps.

`lra-retrieval`: associative recall over a long sequence. The first token asks for a key
("?k2"); somewhere among the remaining `length - 1` filler tokens sit `N_PAIRS` key=value
tokens ("k2=7", "k0=3": distinct keys); the label is the asked key's value. Solving it needs
the first token to find its pair anywhere in the sequence and to tell it from the other pair:
attention that cannot see far from the first token is at chance (1/10). Each pair is one
token, not a key token followed by a value token: with the pair split in two, a 2-layer model
on 1024 tokens stayed at chance for the whole CPU budget (it must first learn to bind value to
key, with no signal until it also finds the key). The filler is one symbol: with 16 random
noise symbols, the sequence-to-sequence spread of the noise hid the pair's 1/1024 share of
the first token's initial (uniform) attention, and the model also stayed at chance. This task
replaces LRA's document-matching retrieval, whose data (the ACL anthology network) does not
exist offline.

Datasets are written to the cache (`$ATTNLAB_HOME/lra/NAME-LENGTH-SEED-vVERSION/`, the version
being the generator's) as .npy arrays with a meta.json holding their SHA-256; a cached file that
does not match is refused.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlab.data.corpora import cache_dir
from attnlab.errors import AttnlabError, did_you_mean
from attnlab.files import atomic_write, sha256_file

SPLITS = ("train", "val", "test")
PAD = 0


@dataclass(frozen=True)
class ClassificationData:
    """Token sequences with one label each, in train / val / test splits.

    Attributes:
        name: the dataset's name.
        tokens: split -> (N, length) int array, padded with `pad_id`.
        labels: split -> (N,) int array in [0, num_classes).
        vocab: the symbol of each token id (id = index).
        num_classes: number of labels.
        pad_id: the padding token.
        meta: how the data was made (generator options, seed, checksums).
    """

    name: str
    tokens: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    vocab: tuple[str, ...]
    num_classes: int
    pad_id: int
    meta: dict

    @property
    def length(self) -> int:
        return self.tokens["train"].shape[1]

    def majority_accuracy(self, split: str = "test") -> float:
        """Accuracy of always answering the training set's most frequent label."""
        majority = np.bincount(self.labels["train"], minlength=self.num_classes).argmax()
        return float((self.labels[split] == majority).mean())

    def first_token_accuracy(self, split: str = "test") -> float:
        """Accuracy of answering, for each first token, its most frequent training label: what
        a classifier that reads nothing but the first token (ListOps' outermost operator,
        retrieval's query) can reach, the floor a `cls`-pooled model meets first."""
        first, labels = self.tokens["train"][:, 0].astype(np.int64), self.labels["train"]
        counts = np.zeros((len(self.vocab), self.num_classes), dtype=np.int64)
        np.add.at(counts, (first, labels), 1)
        guess = counts.argmax(1)  # per first token; unseen ones get label 0
        answer = guess[self.tokens[split][:, 0].astype(np.int64)]
        return float((answer == self.labels[split]).mean())


# -- ListOps -------------------------------------------------------------------------------------
LISTOPS_OPS = ("MIN", "MAX", "MED", "SM")
LISTOPS_VOCAB = ("<pad>", *map(str, range(10)), *(f"[{op}" for op in LISTOPS_OPS), "]")
_DIGIT, _OP, _CLOSE = 1, 11, 15  # first digit id, first operator id, closing bracket id


# LRA's generator: an argument is a digit with probability LEAF_P, else a sub-expression, down
# to MAX_DEPTH; an operator takes 2..max_args arguments. So most arguments at every level are
# plain digits, which is what makes the top levels partly readable without full evaluation.
LEAF_P, MAX_DEPTH = 0.75, 10


class _TooLong(Exception):
    pass


def _listops_tree(rng: random.Random, depth: int, max_args: int, limit: int,
                  out: list[int]) -> int:
    """Append the token ids of a random expression (an operator at depth 0); return its value.
    Raises `_TooLong` as soon as `out` passes `limit` tokens (the draw is rejected anyway)."""
    if depth > 0 and (depth >= MAX_DEPTH or rng.random() < LEAF_P):
        digit = rng.randrange(10)
        out.append(_DIGIT + digit)
        return digit
    op = rng.randrange(len(LISTOPS_OPS))
    n = rng.randint(2, max_args)
    out.append(_OP + op)
    values = [_listops_tree(rng, depth + 1, max_args, limit, out) for _ in range(n)]
    out.append(_CLOSE)
    if len(out) > limit:
        raise _TooLong
    if op == 0:
        return min(values)
    if op == 1:
        return max(values)
    if op == 2:
        return sorted(values)[(n - 1) // 2]
    return sum(values) % 10


def listops(n: int, length: int, seed: int, *, max_args: int = 10) -> tuple[np.ndarray, ...]:
    """`n` ListOps expressions of `length // 4` to `length` tokens, padded to `length`:
    ((n, length) tokens, (n,) labels). Drawn as LRA draws them, keeping those of that length."""
    rng = random.Random(seed)
    tokens = np.full((n, length), PAD, dtype=np.int16)
    labels = np.empty(n, dtype=np.int64)
    i = 0
    while i < n:
        out: list[int] = []
        try:
            value = _listops_tree(rng, 0, max_args, length, out)
        except _TooLong:
            continue
        if len(out) >= length // 4:
            labels[i] = value
            tokens[i, : len(out)] = out
            i += 1
    return tokens, labels


def listops_value(symbols: list[str]) -> int:
    """Evaluate a ListOps expression given as symbols (a reference for tests and users)."""
    stack: list[list] = []
    value = None
    for s in symbols:
        if s.startswith("["):
            stack.append([s[1:]])
        elif s == "]":
            op, *args = stack.pop()
            value = {"MIN": min(args), "MAX": max(args), "SM": sum(args) % 10,
                     "MED": sorted(args)[(len(args) - 1) // 2]}[op]
            if stack:
                stack[-1].append(value)
        elif stack:
            stack[-1].append(int(s))
        else:
            value = int(s)
    if stack or value is None:
        raise ValueError("unbalanced ListOps expression")
    return value


# -- associative recall --------------------------------------------------------------------------
N_KEYS, N_PAIRS = 4, 2
RETRIEVAL_VOCAB = ("<pad>", *(f"?k{i}" for i in range(N_KEYS)),
                   *(f"k{i}={v}" for i in range(N_KEYS) for v in range(10)), "_")
_QUERY, _PAIR, _FILLER = 1, 1 + N_KEYS, 1 + N_KEYS + 10 * N_KEYS


def retrieval(n: int, length: int, seed: int) -> tuple[np.ndarray, ...]:
    """`n` associative-recall sequences of `length` tokens: ((n, length) tokens, (n,) labels).

    Token 0 asks for a key ("?k2"); `N_PAIRS` pair tokens ("k2=7": key 2 holds 7, distinct
    keys) sit at random places among filler tokens; the label is the queried key's value.
    """
    rng = np.random.default_rng(seed)
    tokens = np.full((n, length), _FILLER, dtype=np.int16)
    keys = np.argsort(rng.random((n, N_KEYS)), axis=1)[:, :N_PAIRS]  # distinct keys per row
    values = rng.integers(0, 10, size=(n, N_PAIRS))
    places = 1 + np.argsort(rng.random((n, length - 1)), axis=1)[:, :N_PAIRS]
    rows = np.arange(n)[:, None]
    tokens[rows, places] = _PAIR + 10 * keys + values
    asked = rng.integers(0, N_PAIRS, size=n)
    tokens[:, 0] = _QUERY + keys[np.arange(n), asked]
    return tokens, values[np.arange(n), asked].astype(np.int64)


# -- the registry and the cache ------------------------------------------------------------------
@dataclass(frozen=True)
class LRATask:
    name: str
    make: callable
    vocab: tuple[str, ...]
    num_classes: int
    sizes: tuple[int, int, int]  # train, val, test
    description: str
    version: int = 1  # of the generator: part of the cache folder's name, so old data is not reused


LRA_TASKS = {
    "lra-listops": LRATask("lra-listops", listops, LISTOPS_VOCAB, 10, (8000, 1000, 1000),
                           "nested MIN/MAX/MED/SM expressions over digits -> their value",
                           version=2),
    "lra-retrieval": LRATask("lra-retrieval", retrieval, RETRIEVAL_VOCAB, 10, (8000, 1000, 1000),
                             f"associative recall: the value of the queried key, "
                             f"{N_PAIRS} key=value tokens hidden in filler"),
}


def lra_task(name: str) -> LRATask:
    if name not in LRA_TASKS:
        raise AttnlabError(f"unknown classification dataset '{name}'"
                           f"{did_you_mean(name, LRA_TASKS)}; choose from: {', '.join(LRA_TASKS)}")
    return LRA_TASKS[name]


def load_lra(name: str, length: int, seed: int = 0) -> ClassificationData:
    """The dataset `name` at sequence `length`, generated once from `seed` and then cached."""
    task = lra_task(name)
    if length < 16:
        raise AttnlabError(f"{name}: sequence length must be >= 16, got {length}")
    folder = cache_dir() / "lra" / f"{name}-{length}-{seed}-v{task.version}"
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        _generate(task, folder, length, seed)
    try:
        meta = json.loads(meta_path.read_text())
        files = meta["files"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError):
        raise AttnlabError(f"{meta_path} is corrupt; delete {folder} to regenerate it") from None
    arrays = {}
    for file, digest in files.items():
        path = folder / file
        if not path.is_file() or sha256_file(path) != digest:
            raise AttnlabError(f"{path} does not match its checksum in meta.json; delete "
                               f"{folder} to regenerate it")
        arrays[file] = np.load(path, allow_pickle=False)
    return ClassificationData(
        name=name, vocab=task.vocab, num_classes=task.num_classes, pad_id=PAD, meta=meta,
        tokens={s: arrays[f"{s}-tokens.npy"] for s in SPLITS},
        labels={s: arrays[f"{s}-labels.npy"] for s in SPLITS})


def _generate(task: LRATask, folder: Path, length: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i, (split, n) in enumerate(zip(SPLITS, task.sizes, strict=True)):
        tokens, labels = task.make(n, length, seed * 1000 + i)  # one stream per split
        for kind, array in (("tokens", tokens), ("labels", labels)):
            path = folder / f"{split}-{kind}.npy"
            atomic_write(path, lambda f, a=array: np.save(f, a, allow_pickle=False))
            files[path.name] = sha256_file(path)
    meta = {"name": task.name, "length": length, "seed": seed, "sizes": list(task.sizes),
            "description": task.description, "files": files}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2))
