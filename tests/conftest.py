import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from attnlab.attention import available

#: Options that make each registered mechanism non-degenerate at tiny sizes (T ~ 8-12).
#: Every registered name must appear here: a new mechanism cannot dodge the property tests.
TINY_OPTIONS = {
    "full": {},
    "hard": {},
    "local": {"window": 3},
    "bigbird": {"block_size": 2, "num_random_blocks": 1, "num_global_blocks": 1},
    "longformer": {"window": 3, "global_tokens": 1},
    "flash": {},
    "linformer": {"seq_len": 12, "k": 6},
    # shared_qk=False: with the paper's shared QK the mechanism ignores its k input (which the
    # registry tests expect a gradient for; MultiHeadAttention then builds no k_proj at all);
    # tests/attention/test_lsh.py runs these properties on shared QK.
    "lsh": {"n_buckets": 4, "n_hashes": 2, "chunk_size": 4, "shared_qk": False},
    "performer": {"nb_features": 64},
    # The learned scores (general, concat) and local-p need a fixed head_dim, which the
    # registry tests vary (Dh 4 and 8): tests/attention/test_luong.py runs these properties on
    # them at one head size.
    "luong": {},
    "luong-local": {"window": 2},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def mechanism_params():
    return [pytest.param(name, id=name) for name in available()]
