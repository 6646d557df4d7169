import pytest
import torch

from attnlab.data.synthetic import BOS, EOS, PAD, accuracy, make_sequences
from attnlab.errors import ConfigError


@pytest.mark.parametrize("kind", ["copy", "reverse", "sort"])
def test_targets_are_the_transduced_sources(kind):
    data = make_sequences(kind, 20, min_len=3, max_len=9, n_symbols=5, seed=4)
    assert data.src.shape == (20, 9) and data.tgt_in.shape == data.tgt_out.shape == (20, 10)
    lengths = data.src_mask.sum(1)
    assert lengths.min() >= 3 and lengths.max() <= 9 and len(set(lengths.tolist())) > 1
    for i in range(20):
        L = int(lengths[i])
        row = data.src[i, :L].tolist()
        assert all(3 <= x < 8 for x in row) and data.src[i, L:].eq(PAD).all()
        want = {"copy": row, "reverse": row[::-1], "sort": sorted(row)}[kind]
        assert data.tgt_out[i, :L + 1].tolist() == [*want, EOS]
        assert data.tgt_in[i, :L + 1].tolist() == [BOS, *want]
        assert data.tgt_out[i, L + 1:].eq(PAD).all()


def test_same_seed_same_sequences_other_seed_others():
    a = make_sequences("copy", 8, min_len=4, max_len=6, seed=1)
    b = make_sequences("copy", 8, min_len=4, max_len=6, seed=1)
    c = make_sequences("copy", 8, min_len=4, max_len=6, seed=2)
    assert torch.equal(a.src, b.src) and not torch.equal(a.src, c.src)


def test_accuracy_counts_real_positions_and_whole_rows():
    tgt = torch.tensor([[5, 6, EOS, PAD], [7, 8, 9, EOS]])
    pred = torch.tensor([[5, 6, EOS, 4], [7, 3, 9, EOS]])
    assert accuracy(pred, tgt) == pytest.approx({"token_acc": 6 / 7, "seq_acc": 0.5})


@pytest.mark.parametrize("kwargs, message", [
    (dict(kind="shuffle"), "unknown sequence task 'shuffle'"),
    (dict(min_len=5, max_len=4), "min_len <= max_len"),
    (dict(n_symbols=1), "n_symbols must be >= 2"),
])
def test_bad_settings_are_config_errors(kwargs, message):
    args = {"kind": "copy", "n": 2, "min_len": 2, "max_len": 4, **kwargs}
    with pytest.raises(ConfigError, match=message):
        make_sequences(args.pop("kind"), args.pop("n"), **args)
