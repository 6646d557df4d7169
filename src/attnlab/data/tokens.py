"""Encoded corpora as memory-mapped token arrays, and the batches a language model trains on.

A text is encoded once per tokenizer and cached under `cache_dir()/tokens/<key>/` as raw
little-endian arrays (`train.bin`, `val.bin`) plus `meta.json`; later runs map the files
instead of re-encoding. Batches are read as slices of the map, so a corpus of any size never
becomes a Python list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from attnlab.data.corpora import cache_dir
from attnlab.data.tokenizers import Tokenizer, safe_chunks
from attnlab.errors import AttnlabError, ConfigError
from attnlab.files import atomic_write, sha256_bytes, sha256_file

# Bump when the on-disk layout changes, so old caches are rebuilt instead of misread.
_FORMAT = 1
# Characters per encoding piece: small enough for a lively progress bar and bounded memory,
# large enough that per-call overhead is negligible.
_CHUNK_CHARS = 1 << 18
_CHUNKS_PER_BATCH = 8


@dataclass(frozen=True)
class TokenSplits:
    """A corpus encoded with one tokenizer, split into a training and a validation part.

    Args:
        train: read-only token array (an `np.memmap`), the first part of the text.
        val: read-only token array, the last `val_fraction` of the tokens (an empty array when
            val_fraction is 0, since an empty file cannot be mapped).
        path: the cache folder holding train.bin, val.bin and meta.json.
        meta: what meta.json records (text and tokenizer hashes, counts, dtype).
    """

    train: np.ndarray
    val: np.ndarray
    path: Path
    meta: dict = field(repr=False)

    @property
    def vocab_size(self) -> int:
        """Vocabulary size of the tokenizer that produced the arrays."""
        return int(self.meta["vocab_size"])


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65535), else uint32: half the disk and memory.

    Args:
        vocab_size: number of distinct token ids.
    """
    return np.dtype(np.uint16) if vocab_size <= 65535 else np.dtype(np.uint32)


def tokenizer_fingerprint(tokenizer: Tokenizer) -> str:
    """sha256 of the tokenizer's JSON with sorted keys, so formatting differences do not count.

    Args:
        tokenizer: any attnlab tokenizer.
    """
    canonical = json.dumps(json.loads(tokenizer.to_json()), sort_keys=True, ensure_ascii=False)
    return sha256_bytes(canonical.encode("utf-8"))


def encode_corpus(
    text: str,
    tokenizer: Tokenizer,
    *,
    val_fraction: float = 0.1,
    cache: str | Path | None = None,
    quiet: bool = False,
) -> TokenSplits:
    """Encode `text` with `tokenizer` into memory-mapped train/val arrays, reusing the cache.

    The split is contiguous: validation is the last `val_fraction` of the tokens, so no passage
    straddles both parts (beyond the one boundary). The cache key hashes the text, the
    tokenizer and val_fraction; any change to one of them gives a fresh encoding.

    Args:
        text: the corpus, e.g. from `load_text`.
        tokenizer: a trained tokenizer.
        val_fraction: share of tokens held out for validation, in [0, 1).
        cache: folder for token caches; default `cache_dir()/tokens`.
        quiet: no progress bar.

    Returns:
        TokenSplits whose arrays are read-only `np.memmap`s.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)):
        raise ConfigError(f"val_fraction must be a number in [0, 1), got {val_fraction!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}; e.g. 0.1")
    if not text:
        raise AttnlabError("cannot encode an empty text; give some text")
    text_sha = sha256_bytes(text.encode("utf-8"))
    ident = {
        "format": _FORMAT,
        "text_sha256": text_sha,
        "tokenizer_sha256": tokenizer_fingerprint(tokenizer),
        "val_fraction": float(val_fraction),
    }
    key = sha256_bytes(json.dumps(ident, sort_keys=True).encode("utf-8"))[:24]
    folder = (Path(cache).expanduser() if cache is not None else cache_dir() / "tokens") / key
    cached = _open(folder, key)
    if cached is not None:
        return cached

    vocab_size = tokenizer.vocab_size
    dtype = token_dtype(vocab_size)
    ids = _encode(text, tokenizer, quiet=quiet).astype(dtype)
    n = len(ids)
    n_val = 0 if val_fraction == 0 else max(1, round(n * val_fraction))
    if n - n_val < 1:
        raise AttnlabError(
            f"the text encodes to only {n} tokens, too few to split with val_fraction "
            f"{val_fraction}; give more text"
        )
    # Contiguous split: validation is the tail, so it is text the model never trains on.
    train, val = ids[: n - n_val], ids[n - n_val :]
    atomic_write(folder / "train.bin", train.tobytes())
    atomic_write(folder / "val.bin", val.tobytes())
    meta = {
        **ident,
        "key": key,
        "tokenizer_kind": tokenizer.kind,
        "vocab_size": vocab_size,
        "dtype": dtype.name,
        "n_train": len(train),
        "n_val": len(val),
        "chars": len(text),
        # Checked at every open: ids of the right count but the wrong values would train
        # silently on other data. Hashing costs ~2 ms per MB, next to encoding's ~1 s.
        "sha256": {"train": sha256_bytes(train.tobytes()), "val": sha256_bytes(val.tobytes())},
    }
    # meta.json is written last and is what marks the folder complete.
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2) + "\n")
    opened = _open(folder, key)
    assert opened is not None, f"token cache {folder} unreadable right after writing it"
    return opened


def _encode(text: str, tokenizer: Tokenizer, *, quiet: bool) -> np.ndarray:
    """All ids of `text`, encoded in pieces cut where the result cannot change."""
    chunks = safe_chunks(text, _CHUNK_CHARS)
    arrays: list[np.ndarray] = []
    fast = getattr(tokenizer, "encode_array", None)
    with tqdm(
        total=len(text), desc=f"encoding ({tokenizer.kind})", unit="char", unit_scale=True,
        disable=quiet or len(chunks) < 2 or None,
    ) as bar:  # fmt: skip
        for i in range(0, len(chunks), _CHUNKS_PER_BATCH):
            group = chunks[i : i + _CHUNKS_PER_BATCH]
            if fast is not None:
                arrays.extend(fast(c) for c in group)
            else:
                arrays.extend(
                    np.asarray(ids, dtype=np.int64) for ids in tokenizer.encode_batch(group)
                )
            bar.update(sum(len(c) for c in group))
    return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)


def _open(folder: Path, key: str) -> TokenSplits | None:
    """The cached splits in `folder`, or None when missing, incomplete or inconsistent."""
    try:
        meta = json.loads((folder / "meta.json").read_text("utf-8"))
        if meta.get("key") != key or meta.get("format") != _FORMAT:
            return None
        dtype = np.dtype(meta["dtype"])
        arrays = []
        for name, count in (("train", meta["n_train"]), ("val", meta["n_val"])):
            path = folder / f"{name}.bin"
            if path.stat().st_size != count * dtype.itemsize:
                return None  # truncated or replaced: rebuild rather than train on garbage
            if sha256_file(path) != meta["sha256"][name]:
                return None  # same size, other ids
            arrays.append(_map(path, dtype, count))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return TokenSplits(train=arrays[0], val=arrays[1], path=folder, meta=meta)


def _map(path: Path, dtype: np.dtype, count: int) -> np.ndarray:
    if count == 0:
        empty = np.zeros(0, dtype=dtype)
        empty.flags.writeable = False
        return empty
    return np.memmap(path, dtype=dtype, mode="r", shape=(count,))


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


def _check_sizes(tokens: np.ndarray, batch_size: int, block_size: int) -> int:
    for name, value in (("batch_size", batch_size), ("block_size", block_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    n = len(tokens)
    if n < block_size + 1:
        raise AttnlabError(
            f"the split has {n} tokens, fewer than block_size + 1 = {block_size + 1}; "
            "use a smaller block_size, a larger val_fraction, or more text"
        )
    return n


def _windows(tokens: np.ndarray, starts: list[int], block_size: int) -> tuple[torch.Tensor, ...]:
    # One (B, T+1) int64 array read straight from the map; x and y are its two overlapping
    # views, copied to contiguous tensors so `.view(-1)` works on them downstream.
    buf = np.stack([np.asarray(tokens[s : s + block_size + 1]) for s in starts]).astype(np.int64)
    both = torch.from_numpy(buf)
    return both[:, :-1].contiguous(), both[:, 1:].contiguous()


def sample_batch(
    tokens: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random training windows: x is `block_size` tokens, y the same window shifted by one.

    Start positions come from `generator` alone, so saving `generator.get_state()` with a
    checkpoint and restoring it reproduces the data stream exactly on resume.

    Args:
        tokens: a token array (e.g. `TokenSplits.train`).
        batch_size: windows per batch (B).
        block_size: tokens per window (T).
        generator: a CPU `torch.Generator`.

    Returns:
        (x, y), int64 tensors of shape (B, T) with y[:, :-1] == x[:, 1:].
    """
    n = _check_sizes(tokens, batch_size, block_size)
    starts = torch.randint(0, n - block_size, (batch_size,), generator=generator)
    return _windows(tokens, starts.tolist(), block_size)


def eval_batches(
    tokens: np.ndarray, batch_size: int, block_size: int, max_batches: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic validation batches: windows spread evenly over the whole split.

    With `max_batches`, `max_batches * batch_size` windows (or as many distinct ones as exist)
    at evenly spaced starts from the first to the last possible one; without it, consecutive
    non-overlapping windows covering the split. The same inputs always give the same batches,
    so validation losses of different runs and steps compare. The last batch may be smaller.

    Args:
        tokens: a token array (e.g. `TokenSplits.val`).
        batch_size: windows per batch.
        block_size: tokens per window.
        max_batches: cap on the number of batches, or None for the whole split.

    Returns:
        An iterator of (x, y) int64 tensors as in `sample_batch`.
    """
    n = _check_sizes(tokens, batch_size, block_size)
    last = n - block_size - 1  # the last start whose target window fits
    if max_batches is None:
        starts = list(range(0, last + 1, block_size))
    else:
        if isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1:
            raise ConfigError(
                f"max_batches must be a positive integer or None, got {max_batches!r}"
            )
        count = min(max_batches * batch_size, last + 1)
        # Spacing >= 1 when count <= last + 1, so the rounded starts are distinct.
        starts = np.linspace(0, last, num=count).round().astype(np.int64).tolist()

    def batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(starts), batch_size):
            yield _windows(tokens, starts[i : i + batch_size], block_size)

    return batches()
