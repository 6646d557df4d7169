"""The majority baseline answers the TRAINING split's most frequent
label (never the scored split's own), for the LRA, image and sentiment sets alike; synthetic
sequence lengths reach both ends of [min_len, max_len]."""

import numpy as np
import pytest

from attnlab.data import lra
from attnlab.data.images import ImageData
from attnlab.data.sentiment import TextClassificationData
from attnlab.data.synthetic import make_sequences

# train's majority is 1; test's own majority is 2 (1 appears once in five)
TRAIN = np.array([1, 1, 1, 0, 2])
TEST = np.array([2, 2, 2, 0, 1])


def _sets():
    tok = {s: np.zeros((5, 4), dtype=np.int16) for s in ("train", "test")}
    img = {s: np.zeros((5, 1, 2, 2), dtype=np.float32) for s in ("train", "test")}
    labels = {"train": TRAIN, "test": TEST}
    yield lra.ClassificationData("toy", tok, labels, tuple("abc"), 3, 0, {})
    yield ImageData("toy", img, labels, ("a", "b", "c"), {})
    yield TextClassificationData("toy", {"train": ["x"] * 5, "test": ["y"] * 5}, labels,
                                 ("a", "b", "c"), {})


@pytest.mark.parametrize("data", list(_sets()), ids=["lra", "images", "sentiment"])
def test_majority_baseline_uses_the_training_labels(data):
    assert data.majority_accuracy("test") == pytest.approx(1 / 5)
    assert data.majority_accuracy("train") == pytest.approx(3 / 5)


def test_sequence_lengths_cover_min_to_max_inclusive():
    data = make_sequences("copy", 200, min_len=2, max_len=5, seed=0)
    assert sorted(set(data.src_mask.sum(1).tolist())) == [2, 3, 4, 5]
