"""FlatDecoder cases: norms' epsilon, explicit positions on
the one-token path, and two parts its `unsupported` guard must refuse (a renormalizing
embedding, a mechanism with a forward of its own)."""

import copy

import torch

from attnlab.attention.full import FullAttention
from attnlab.generate import generate
from attnlab.models.flat_decoder import FlatDecoder, unsupported
from tests.models.test_flat_decoder import ARCHITECTURES, step_logits, tiny_gpt

PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8]]


def test_a_large_norm_epsilon_is_honoured():
    for arch in ("gpt2", "llama"):  # LayerNorm and RMSNorm
        model = tiny_gpt(**ARCHITECTURES[arch], norm_eps=0.5)
        assert unsupported(model) is None
        for batch in ("one-row", "two-rows-left-padded"):
            for a, b in zip(step_logits(model, True, batch), step_logits(model, False, batch),
                            strict=True):
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_explicit_positions_of_one_token_are_honoured():
    """FlatDecoder takes positions "as for GPT.forward", one unpadded token included."""
    for arch in ("gpt2", "llama"):  # learned positions, RoPE
        model = tiny_gpt(**ARCHITECTURES[arch])
        decoder, cache = FlatDecoder(model), model.new_cache()
        flat_cache = decoder.new_cache(1, 8)
        prompt, nxt = torch.tensor([[4, 9, 2]]), torch.tensor([[7]])
        pos = torch.tensor([[6]])  # not the cache's count (3)
        with torch.inference_mode():
            decoder(prompt, cache=flat_cache)
            model(prompt, cache=cache)
            got = decoder(nxt, cache=flat_cache, positions=pos)
            want = model(nxt, cache=cache, positions=pos)[:, -1]
            default = model(nxt, cache=model.new_cache(), positions=None)[:, -1]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(want, default, atol=1e-3)


def test_a_renormalizing_embedding_decodes_through_its_modules():
    model = tiny_gpt()
    model.tok_emb.max_norm = 1.0  # the drawn rows have norms ~ sqrt(32): all renormalized
    assert unsupported(model) == "the token embedding renormalizes (max_norm)"
    # max_norm rewrites the looked-up rows in place: each run gets its own copy
    auto = generate(copy.deepcopy(model), PROMPTS, temperature=0, max_new_tokens=8)
    modules = generate(copy.deepcopy(model), PROMPTS, temperature=0, max_new_tokens=8,
                       decoder="modules")
    plain = copy.deepcopy(model)
    plain.tok_emb.max_norm = None
    assert auto == modules
    assert modules != generate(plain, PROMPTS, temperature=0, max_new_tokens=8)


class DoubledAttention(FullAttention):
    """A mechanism whose forward does more than `attend`: the flat step would skip it."""

    def forward(self, q, k, v, **kwargs):
        out, w = super().forward(q, k, v, **kwargs)
        return 2 * out, w


def test_a_mechanism_with_its_own_forward_decodes_through_its_modules():
    model = tiny_gpt()
    reference = generate(model, PROMPTS, temperature=0, max_new_tokens=8)
    model.stack.blocks[0].self_attn.attn = DoubledAttention().eval()
    assert unsupported(model) == "attention 'full' overrides forward"
    changed = generate(model, PROMPTS, temperature=0, max_new_tokens=8)
    assert changed == generate(model, PROMPTS, temperature=0, max_new_tokens=8,
                               decoder="modules")
    assert changed != reference
