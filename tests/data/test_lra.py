"""The long-range classification datasets: labels right, shapes right, cached and checked."""

import numpy as np
import pytest

from attnlab.data import lra
from attnlab.errors import AttnlabError


def symbols(row, vocab):
    return [vocab[i] for i in row if i != lra.PAD]


@pytest.mark.parametrize("text, value", [
    ("[MAX 4 3 [MIN 2 3 ] 1 0 [MED 1 5 8 9 2 ] ]", 5),
    ("[SM 7 8 ]", 5),
    ("[MED 1 9 4 6 ]", 4),  # an even count takes the lower median
    ("[MIN [SM 9 9 ] [MAX 3 7 ] ]", 7),
    ("6", 6),
])
def test_listops_value_of_hand_written_expressions(text, value):
    assert lra.listops_value(text.split()) == value


def test_listops_value_rejects_unbalanced():
    with pytest.raises(ValueError):
        lra.listops_value(["[MAX", "1", "2"])


def test_listops_labels_are_the_values_of_their_expressions():
    tokens, labels = lra.listops(200, 256, seed=3)
    assert tokens.shape == (200, 256) and labels.shape == (200,)
    for row, label in zip(tokens, labels, strict=True):
        assert lra.listops_value(symbols(row, lra.LISTOPS_VOCAB)) == label
    real = tokens != lra.PAD
    n_real = real.sum(1)
    assert (real == (np.arange(256) < n_real[:, None])).all()  # padding only at the end
    assert n_real.max() <= 256 and n_real.min() >= 256 // 4
    assert len(np.unique(labels)) == 10


def test_retrieval_label_is_the_asked_keys_value():
    tokens, labels = lra.retrieval(300, 128, seed=1)
    vocab = lra.RETRIEVAL_VOCAB
    for row, label in zip(tokens, labels, strict=True):
        asked = vocab[row[0]]
        assert asked.startswith("?k")
        pairs = dict(vocab[t].split("=") for t in row[1:] if "=" in vocab[t])
        assert len(pairs) == lra.N_PAIRS  # distinct keys, each once
        assert int(pairs[asked[1:]]) == label
    assert (tokens != lra.PAD).all()
    counts = np.bincount(labels, minlength=10)
    assert counts.min() > 10  # all ten values occur


def test_generators_are_deterministic_per_seed():
    a, b = lra.retrieval(20, 64, seed=5), lra.retrieval(20, 64, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], lra.retrieval(20, 64, seed=6)[0])
    c, d = lra.listops(20, 64, seed=5), lra.listops(20, 64, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(c, d, strict=True))


def test_first_token_baseline_answers_each_first_tokens_most_frequent_label():
    # first token 1 -> labels 2, 2, 0 (guess 2); first token 3 -> label 1; 5 never seen (guess 0)
    train = np.array([[1, 9], [1, 8], [1, 7], [3, 7]]), np.array([2, 2, 0, 1])
    test = np.array([[1, 0], [3, 0], [5, 0], [1, 0]]), np.array([2, 0, 0, 0])
    data = lra.ClassificationData("toy", {"train": train[0], "test": test[0]},
                                  {"train": train[1], "test": test[1]},
                                  tuple("abcdefghij"), 3, 0, {})
    assert data.first_token_accuracy("test") == 0.5  # rows 0 and 2 right
    assert data.first_token_accuracy("train") == 0.75


def test_listops_first_token_is_the_outer_operator_and_predicts_more_than_the_majority():
    tokens, labels = lra.listops(400, 128, seed=3)
    data = lra.ClassificationData("listops", {"train": tokens, "test": tokens},
                                  {"train": labels, "test": labels}, lra.LISTOPS_VOCAB, 10, 0, {})
    assert set(np.unique(tokens[:, 0])) <= set(range(11, 15))
    assert data.first_token_accuracy() > data.majority_accuracy() + 0.05


def test_load_caches_once_and_checks_checksums(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path))
    data = lra.load_lra("lra-retrieval", 64)
    assert data.length == 64 and data.num_classes == 10
    assert [len(data.labels[s]) for s in lra.SPLITS] == list(lra.LRA_TASKS["lra-retrieval"].sizes)
    assert not np.array_equal(data.tokens["train"][:50], data.tokens["val"][:50])
    folder = tmp_path / "lra" / "lra-retrieval-64-0-v1"
    stamp = (folder / "train-tokens.npy").stat().st_mtime_ns
    again = lra.load_lra("lra-retrieval", 64)
    assert (folder / "train-tokens.npy").stat().st_mtime_ns == stamp  # not regenerated
    assert np.array_equal(again.tokens["test"], data.tokens["test"])
    assert 0.0 < data.majority_accuracy() < 0.3

    path = folder / "val-labels.npy"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(AttnlabError, match="checksum"):
        lra.load_lra("lra-retrieval", 64)


def test_bad_names_and_lengths(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path))
    with pytest.raises(AttnlabError, match="did you mean 'lra-listops'"):
        lra.load_lra("lra-listop", 64)
    with pytest.raises(AttnlabError, match=">= 16"):
        lra.load_lra("lra-listops", 8)
