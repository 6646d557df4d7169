"""Classifier evaluation over batches that do not divide the split
equals one pass over the whole split, and the majority baseline is the validation share of
the most frequent training label."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlab.data.lra import ClassificationData
from attnlab.models import Encoder, EncoderConfig
from attnlab.tasks.classify import SequenceClassification


def _data():
    rng = np.random.default_rng(0)

    def split(n, train):
        tokens = rng.integers(1, 6, (n, 10))
        for row, keep in zip(tokens, rng.integers(4, 11, n), strict=True):
            row[keep:] = 0  # padding
        labels = (rng.random(n) < (0.7 if train else 0.4)).astype(np.int64)  # 1 the majority
        return tokens, labels

    parts = {s: split(n, s == "train") for s, n in (("train", 40), ("val", 13), ("test", 7))}
    return ClassificationData(name="toy", tokens={s: p[0] for s, p in parts.items()},
                              labels={s: p[1] for s, p in parts.items()},
                              vocab=tuple("_abcde"), num_classes=2, pad_id=0, meta={})


def test_evaluate_over_uneven_batches_equals_the_whole_split():
    data = _data()
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(vocab_size=6, d_model=16, n_heads=2, n_layers=1, max_len=10,
                                  num_classes=2)).eval()
    task = SequenceClassification(model, data, batch_size=5)  # 13 = 5 + 5 + 3
    m = task.evaluate(model, "val")
    x = torch.from_numpy(data.tokens["val"].astype(np.int64))
    y = torch.from_numpy(data.labels["val"])
    with torch.no_grad():
        logits = model(x, key_padding_mask=x != 0)
    assert m["val_loss"] == pytest.approx(F.cross_entropy(logits, y).item(), rel=1e-5)
    assert m["val_accuracy"] == pytest.approx(float((logits.argmax(-1) == y).float().mean()))
    base = task.baselines()
    want = float((data.labels["val"] == np.bincount(data.labels["train"]).argmax()).mean())
    assert base["majority_accuracy"] == pytest.approx(want)
    assert base["majority_accuracy"] != pytest.approx(data.majority_accuracy("train"))
    assert base["chance_accuracy"] == 0.5
