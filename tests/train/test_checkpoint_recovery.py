"""`resolve` after a kill that lands between the second rename and the removal of the old
checkpoint: both `last` and `last.old` are whole there, and the
new one must win."""

import os
import shutil

import pytest
import torch

from attnlab.models import GPT, GPTConfig
from attnlab.train.checkpoint import load_checkpoint, resolve, save_checkpoint


def test_a_kill_after_the_swap_but_before_the_cleanup_resumes_the_new_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=13, d_model=16, n_heads=2, n_layers=1, max_len=8))
    last, old = tmp_path / "last", tmp_path / "last.old"
    save_checkpoint(last, model, None, {"step": 1})
    os.replace(last, old)  # the first rename of the next save ...
    save_checkpoint(tmp_path / "new", model, None, {"step": 2})
    os.replace(tmp_path / "new", last)  # ... and the second; the kill comes before the cleanup
    assert resolve(last) == last
    assert load_checkpoint(last, model)[0]["step"] == 2
    shutil.rmtree(last)  # a kill between the two renames: the old one is all there is
    assert resolve(last) == old and load_checkpoint(last, model)[0]["step"] == 1


def test_weights_missing_from_the_file_are_refused_not_left_at_their_init(tmp_path):
    from attnlab.errors import AttnlabError
    from attnlab.train.checkpoint import load_model_weights

    def gpt(n_layers):
        return GPT(GPTConfig(vocab_size=13, d_model=16, n_heads=2, n_layers=n_layers, max_len=8))

    save_checkpoint(tmp_path / "one", gpt(1), None, {"step": 0})
    with pytest.raises(AttnlabError, match=r"does not hold this model's weights: missing "
                                           r"\['stack\.blocks\.1\."):
        load_model_weights(gpt(2), tmp_path / "one" / "model.safetensors")
    load_model_weights(gpt(1), tmp_path / "one" / "model.safetensors")  # tied head: not missing
