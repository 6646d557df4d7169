"""The bounds of the data and train sections, each at its edge: the first value refused and
the last one accepted."""

import pytest

from attnlab.errors import ConfigError
from attnlab.tasks.config import DataConfig, RunConfig, TrainConfig


@pytest.mark.parametrize("value, ok", [(0.0, False), (1e-6, True), (0.49, True), (0.5, False),
                                       (-0.1, False)])
def test_val_fraction_is_inside_zero_and_a_half(value, ok):
    if ok:
        assert DataConfig(val_fraction=value).val_fraction == value
    else:
        with pytest.raises(ConfigError, match="val_fraction"):
            DataConfig(val_fraction=value)


@pytest.mark.parametrize("field, bad, good", [
    ("lr", 0.0, 1e-9), ("min_lr", -1e-9, 0.0), ("warmup_steps", -1, 0),
    ("max_minutes", -0.5, 0.0), ("sample_tokens", -1, 0), ("max_steps", 0, 1),
    ("batch_size", 0, 1), ("grad_accum", 0, 1), ("eval_interval", 0, 1),
    ("eval_batches", 0, 1), ("checkpoint_interval", 0, 1), ("log_interval", 0, 1)])
def test_train_bounds(field, bad, good):
    assert getattr(TrainConfig(**{field: good}), field) == good
    with pytest.raises(ConfigError, match=f"train.{field}|{field} >= 0"):
        TrainConfig(**{field: bad})


def test_a_char_tokenizer_refuses_a_vocab_size_and_unknown_sections_are_named():
    assert DataConfig(tokenizer="bpe", vocab_size=500).tokenizer_vocab() == 500
    assert DataConfig().tokenizer_vocab() is None
    with pytest.raises(ConfigError, match="sizes a bpe tokenizer"):
        DataConfig(vocab_size=500).tokenizer_vocab()
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'.*'train'"):
        RunConfig.from_dict({"trian": {}})
