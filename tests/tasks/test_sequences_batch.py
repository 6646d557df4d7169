"""A training batch of the synthetic transduction task is the generated rows with only the
padding every row shares cut off: no row loses a source token or a target token."""

import torch
from torch import nn

from attnlab.data.synthetic import PAD, make_sequences
from attnlab.tasks.sequences import SequenceTransduction


def test_train_batches_keep_every_real_token():
    task = SequenceTransduction(nn.Linear(1, 1), "reverse", 1, 12, 8)
    for seed in range(3):
        batch = task.train_batch(torch.Generator().manual_seed(seed), 16, slice(0, 16))
        g = torch.Generator().manual_seed(seed)
        rows = make_sequences("reverse", 16, min_len=1, max_len=12, n_symbols=8,
                              seed=int(torch.randint(2**31 - 1, (1,), generator=g)) + 100)
        lengths = rows.src_mask.sum(1)
        assert lengths.min() < lengths.max()  # ragged: the cut matters
        S = int(lengths.max())
        assert batch.src.shape[1] == S and batch.tgt_out.shape[1] == S + 1
        assert torch.equal(batch.src, rows.src[:, :S])
        assert torch.equal(batch.src_mask, rows.src_mask[:, :S])
        assert torch.equal(batch.tgt_in, rows.tgt_in[:, :S + 1])
        assert torch.equal(batch.tgt_out, rows.tgt_out[:, :S + 1])
        assert (rows.tgt_out[:, S + 1:] == PAD).all()
