"""The lm task's unigram baseline and held_out_loss's last window, by hand (elsewhere
only the baseline's use is checked, and held_out_loss only at a length whose last window
scores two tokens)."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attnlab.data import CharTokenizer
from attnlab.models import GPT, GPTConfig
from attnlab.tasks.lm import LanguageModeling, held_out_loss

TEXT = "the cat sat on the mat; a dog ran fast. " * 8


class Splits:
    def __init__(self, train, val):
        self.train = np.asarray(train, dtype=np.uint16)
        self.val = np.asarray(val, dtype=np.uint16)


def test_unigram_loss_is_the_add_one_cross_entropy_of_val_under_train_counts():
    tokenizer = CharTokenizer("abcdef")  # vocabulary 256 + 6
    train, val = [256, 256, 256, 257, 258, 258], [256, 258, 259, 0]  # 259 and 0 unseen
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, d_model=8, n_heads=2, n_layers=1,
                          max_len=4))
    task = LanguageModeling(model, tokenizer, Splits(train, val))
    counts, total = Counter(train), len(train) + tokenizer.vocab_size
    want = -sum(math.log((counts[t] + 1) / total) for t in val) / len(val)
    assert task.unigram_loss() == pytest.approx(want, rel=1e-12)
    assert task.baselines() == {"unigram_loss": task.unigram_loss()}


@pytest.mark.parametrize("max_tokens", [47, 48, 49])  # last windows of 15, 16 and 1 targets
def test_held_out_loss_scores_every_token_up_to_max_tokens(max_tokens):
    tokenizer = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1,
                          max_len=16)).eval()
    m = held_out_loss(model, tokenizer, TEXT, context=16, max_tokens=max_tokens, held_out=0.5,
                      batch_size=2)
    ids = tokenizer.encode(TEXT[len(TEXT) // 2:])[:max_tokens + 1]
    total = 0.0
    for s in range(0, max_tokens, 16):
        window = torch.tensor([ids[s: s + 17]])
        with torch.no_grad():
            total += F.cross_entropy(model(window[:, :-1])[0], window[0, 1:],
                                     reduction="sum").item()
    assert m["tokens"] == max_tokens
    assert m["val_loss"] == pytest.approx(total / max_tokens, rel=1e-5)
    assert m["bits_per_char"] == pytest.approx(total / math.log(2) / max_tokens, rel=1e-5)
