from __future__ import annotations

import numpy as np
import pytest
import torch

from attnlab.data import tokens as tokens_mod
from attnlab.data.corpora import cache_dir
from attnlab.data.tokenizers import CharTokenizer, train_tokenizer
from attnlab.data.tokens import (
    encode_corpus,
    eval_batches,
    sample_batch,
    token_dtype,
)
from attnlab.errors import AttnlabError, ConfigError

TEXT = "".join(f"Line {i}: to be, or not to be 😀\n" for i in range(400))
# Blank-line runs and spaces around newlines: where a careless cut would change BPE tokens.
WHITESPACE = "To be.\n\n\n  spaced  \nend\n\nAll:\n" * 100


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return train_tokenizer("char", TEXT)


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer("bpe", TEXT + WHITESPACE, vocab_size=320)


# --------------------------------------------------------------------------------------------
# encode_corpus


def test_encode_corpus_memmaps_contiguous_split(char):
    splits = encode_corpus(TEXT, char, val_fraction=0.1, quiet=True)
    ids = char.encode(TEXT)
    n_val = round(len(ids) * 0.1)
    assert isinstance(splits.train, np.memmap) and isinstance(splits.val, np.memmap)
    assert splits.train.dtype == np.uint16 and splits.val.dtype == np.uint16
    assert len(splits.val) == n_val and len(splits.train) == len(ids) - n_val
    # Contiguous: train is the head, val the tail; together they are the whole text.
    assert splits.train.tolist() + splits.val.tolist() == ids
    assert char.decode(splits.val.tolist()) == TEXT[-len(char.decode(splits.val.tolist())) :]
    assert splits.path.parent == cache_dir() / "tokens"
    assert {p.name for p in splits.path.iterdir()} == {"train.bin", "val.bin", "meta.json"}
    assert splits.vocab_size == char.vocab_size and splits.meta["tokenizer_kind"] == "char"
    with pytest.raises(ValueError):
        splits.train[0] = 1  # read-only


def test_encode_corpus_reuses_cache(char, monkeypatch):
    first = encode_corpus(TEXT, char, quiet=True)
    mtimes = {p.name: p.stat().st_mtime_ns for p in first.path.iterdir()}

    def no_encoding(*args, **kwargs):
        raise AssertionError("re-encoded although the cache was valid")

    monkeypatch.setattr(tokens_mod, "_encode", no_encoding)
    again = encode_corpus(TEXT, CharTokenizer(char.chars), quiet=True)  # equal tokenizer
    assert again.path == first.path
    assert np.array_equal(again.train, first.train) and np.array_equal(again.val, first.val)
    assert {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == mtimes
    # Anything that changes the result changes the key.
    with pytest.raises(AssertionError, match="re-encoded"):
        encode_corpus(TEXT, char, val_fraction=0.2, quiet=True)
    with pytest.raises(AssertionError, match="re-encoded"):
        encode_corpus(TEXT + "x", char, quiet=True)


def test_encode_corpus_rebuilds_truncated_cache(char):
    first = encode_corpus(TEXT, char, quiet=True)
    expected = first.train.tolist()
    path = first.path / "train.bin"
    del first
    path.write_bytes(path.read_bytes()[:10])
    assert encode_corpus(TEXT, char, quiet=True).train.tolist() == expected


def test_encode_corpus_rebuilds_a_cache_whose_ids_changed_but_not_their_count(char):
    first = encode_corpus(TEXT, char, quiet=True)
    expected = first.train.tolist()
    path = first.path / "train.bin"
    del first
    data = bytearray(path.read_bytes())
    data[:4] = bytes(reversed(data[:4])) if data[:4] != data[3::-1] else b"\x01\x02\x03\x04"
    path.write_bytes(bytes(data))  # same size, other (valid) ids
    assert encode_corpus(TEXT, char, quiet=True).train.tolist() == expected


def test_encode_corpus_custom_cache_and_zero_val(char, tmp_path):
    splits = encode_corpus(TEXT, char, val_fraction=0.0, cache=tmp_path / "tok", quiet=True)
    assert splits.path.parent == tmp_path / "tok"
    assert len(splits.val) == 0 and len(splits.train) == len(TEXT)


def test_encode_corpus_large_vocab_uses_uint32():
    # 65,281 characters + 256 bytes: the last character's id, 65,536, does not fit in uint16.
    chars = [chr(c) for c in range(0x10000, 0x10000 + 65281)]  # plane 1: no surrogates
    big = CharTokenizer(chars)
    assert big.vocab_size > 65535
    text = "\U00010000\U00010001" * 50 + chr(0x10000 + 65280) + "unseen 中文"
    splits = encode_corpus(text, big, quiet=True)
    assert splits.train.dtype == np.uint32
    assert splits.train.tolist() + splits.val.tolist() == big.encode(text)
    assert max(big.encode(text)) == 65536 == int(splits.train.max())
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


def test_chunked_bpe_corpus_encoding_equals_whole(bpe, monkeypatch):
    monkeypatch.setattr(tokens_mod, "_CHUNK_CHARS", 13)  # force many pieces and batches
    text = TEXT[:2000] + WHITESPACE
    splits = encode_corpus(text, bpe, val_fraction=0.25, quiet=True)
    assert splits.train.tolist() + splits.val.tolist() == bpe.encode(text)


def test_encode_corpus_errors(char):
    for bad in (-0.1, 1.0, 2, "0.1", True):
        with pytest.raises(ConfigError, match="val_fraction"):
            encode_corpus(TEXT, char, val_fraction=bad, quiet=True)
    with pytest.raises(AttnlabError, match="empty"):
        encode_corpus("", char, quiet=True)
    with pytest.raises(AttnlabError, match="too few"):
        encode_corpus("a", char, val_fraction=0.5, quiet=True)


# --------------------------------------------------------------------------------------------
# Batches

SEQ = np.arange(5000, dtype=np.uint16)  # token i has id i: a window's content names its start


def test_sample_batch_shapes_and_shift():
    x, y = sample_batch(SEQ, 4, 16, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x shifted by one token
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))
    assert x.is_contiguous() and y.is_contiguous()
    assert x.min() >= 0 and y.max() <= len(SEQ) - 1


def test_sample_batch_reads_memmap(char):
    splits = encode_corpus(TEXT, char, quiet=True)
    x, y = sample_batch(splits.train, 3, 8, torch.Generator().manual_seed(1))
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        assert row_x[1:] == row_y[:-1]
        assert char.decode(row_x) in TEXT


def test_sample_batch_reproduces_stream_from_generator_state():
    g = torch.Generator().manual_seed(123)
    sample_batch(SEQ, 4, 16, g)
    state = g.get_state()
    stream = [sample_batch(SEQ, 4, 16, g) for _ in range(3)]
    g2 = torch.Generator()
    g2.set_state(state)
    again = [sample_batch(SEQ, 4, 16, g2) for _ in range(3)]
    for (x1, y1), (x2, y2) in zip(stream, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(stream[0][0], stream[1][0])
    # The global RNG plays no part.
    torch.manual_seed(0)
    a = sample_batch(SEQ, 4, 16, torch.Generator().manual_seed(5))
    torch.manual_seed(99)
    b = sample_batch(SEQ, 4, 16, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0])


def test_sample_batch_covers_both_ends():
    g = torch.Generator().manual_seed(0)
    short = SEQ[:10]
    starts = {int(sample_batch(short, 8, 8, g)[0][i, 0]) for _ in range(20) for i in range(8)}
    assert starts == {0, 1}  # exactly the windows of 8 + 1 tokens that fit in 10


def test_batches_reject_short_split_and_bad_sizes():
    with pytest.raises(AttnlabError, match="fewer than block_size"):
        sample_batch(SEQ[:16], 2, 16, torch.Generator())
    with pytest.raises(AttnlabError, match="fewer than block_size"):
        eval_batches(SEQ[:16], 2, 16, 1)
    for bad in (0, -1, 2.0):
        with pytest.raises(ConfigError, match="batch_size"):
            sample_batch(SEQ, bad, 4, torch.Generator())
        with pytest.raises(ConfigError, match="block_size"):
            eval_batches(SEQ, 2, bad)
    with pytest.raises(ConfigError, match="max_batches"):
        eval_batches(SEQ, 2, 4, 0)


def test_eval_batches_deterministic_and_evenly_spaced():
    batches = list(eval_batches(SEQ, 4, 16, max_batches=5))
    again = list(eval_batches(SEQ, 4, 16, max_batches=5))
    assert len(batches) == 5
    for (x1, y1), (x2, y2) in zip(batches, again, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert torch.equal(y1, x1 + 1)
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts[0] == 0 and starts[-1] == len(SEQ) - 17  # first and last possible windows
    gaps = np.diff(starts)
    assert gaps.min() >= gaps.max() - 1  # evenly spaced up to rounding


def test_eval_batches_whole_split_and_small_split():
    batches = list(eval_batches(SEQ[:100], 3, 10))
    starts = torch.cat([x[:, 0] for x, _ in batches]).tolist()
    assert starts == list(range(0, 90, 10))  # non-overlapping windows
    assert [len(x) for x, _ in batches] == [3, 3, 3]
    few = list(eval_batches(SEQ[:12], 4, 10, max_batches=10))  # only 2 windows exist
    assert torch.cat([x[:, 0] for x, _ in few]).tolist() == [0, 1]
