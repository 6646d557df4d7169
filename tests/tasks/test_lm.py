"""The language-modelling task: its validation metrics against a hand computation."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.data import encode_corpus, eval_batches, train_tokenizer
from attnlab.models import GPT, GPTConfig
from attnlab.tasks.lm import LanguageModeling

# Words of different lengths and a few multi-byte characters, so that characters per token
# vary from window to window.
TEXT = ("a an ant antelope 🐜 über naïve the cat sat, on the mat! attention is all you need; "
        "x xy xyz ") * 60


@pytest.mark.parametrize("kind, vocab", [("bpe", 300), ("char", None)])
def test_bits_per_char_are_those_of_the_windows_scored(tmp_path, kind, vocab):
    tokenizer = train_tokenizer(kind, TEXT, vocab)
    splits = encode_corpus(TEXT, tokenizer, val_fraction=0.3, cache=tmp_path, quiet=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1,
                          max_len=16)).eval()
    task = LanguageModeling(model, tokenizer, splits, eval_batch_count=2, batch_size=3)
    with torch.no_grad():
        m = task.evaluate(model)
    total = count = chars = 0
    for x, y in eval_batches(splits.val, 3, 16, 2):
        with torch.no_grad():
            total += F.cross_entropy(model(x).flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
        chars += sum(len(tokenizer.decode(row.tolist())) for row in y)
    assert m["val_loss"] == pytest.approx(total / count, rel=1e-6)
    assert m["perplexity"] == pytest.approx(math.exp(total / count), rel=1e-6)
    assert m["bits_per_char"] == pytest.approx(total / math.log(2) / chars, rel=1e-6)
    if kind == "bpe":  # several characters per token: the two measures really differ
        assert m["bits_per_char"] < 0.8 * m["val_loss"] / math.log(2)
