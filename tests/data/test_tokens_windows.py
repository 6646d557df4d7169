"""eval_batches over a whole split reaches its last window (test_tokens.py's split
length leaves the last start off the block grid)."""

import numpy as np

from attnlab.data.tokens import eval_batches


def test_whole_split_windows_include_the_last_one_that_fits():
    tokens = np.arange(21, dtype=np.uint16)  # windows of 10 + 1 tokens start at 0 and 10
    batches = list(eval_batches(tokens, 4, 10))
    assert [x[:, 0].tolist() for x, _ in batches] == [[0, 10]]
    assert batches[0][1][-1].tolist() == list(range(11, 21))  # the split's last token scored
