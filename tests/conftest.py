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
    "flash": {},
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def mechanism_params():
    return [pytest.param(name, id=name) for name in available()]
