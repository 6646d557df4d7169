"""The flat decoding loop of benchmarks/decode_floor.py stays the same computation as attnlab's
decoding, so that its timings bound attnlab's."""

import pytest
import torch
from benchmarks.decode_floor import flat_greedy

from attnlab.generate import generate
from attnlab.models import GPT, GPTConfig


def gpt2_shaped(**changes) -> GPT:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, d_model=32, n_heads=2, n_layers=2, max_len=64,
               activation="gelu_tanh", positional="learned")
    model = GPT(GPTConfig(**{**cfg, **changes})).eval()
    with torch.no_grad():  # a scale at which greedy decoding does not repeat one token
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 1.5 * p.shape[1] ** -0.5)
    return model


def test_the_flat_loop_emits_attnlabs_greedy_tokens():
    model = gpt2_shaped()
    prompt = torch.randint(0, 50, (1, 7), generator=torch.Generator().manual_seed(1))
    ours = generate(model, prompt, max_new_tokens=30, temperature=0.0)[0]
    assert len(set(ours)) > 3  # not a degenerate repetition
    assert flat_greedy(model, prompt, 30) == ours
    assert generate(model, prompt, max_new_tokens=30, temperature=0.0,
                    decoder="modules")[0] == ours


def test_the_flat_loop_refuses_other_shapes():
    with pytest.raises(ValueError, match="GPT-2 shape only"):
        flat_greedy(gpt2_shaped(positional="rope"), torch.zeros(1, 3, dtype=torch.long), 2)
