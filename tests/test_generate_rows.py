"""generate: a list of eos ids stops a row at any of them (not just the first), a model mixing
shift-invariant and shift-variant mechanisms still decodes row by row, and bool / non-bool
fields of GenerationConfig are checked."""

import pytest
import torch

from attnlab.attention import registry
from attnlab.errors import ConfigError
from attnlab.generate import GenerationConfig, generate
from tests.helpers import decoding_gpt

V = 31


def first_occurrences(ids):
    """Distinct tokens of `ids` in the order they first appear, with that index."""
    seen = {}
    for i, t in enumerate(ids):
        seen.setdefault(t, i)
    return sorted(seen.items(), key=lambda kv: kv[1])


def test_each_id_of_an_eos_list_ends_the_row_not_only_the_first():
    model = decoding_gpt(V, 64)
    ref = generate(model, [[4, 5, 6, 7]], temperature=0, max_new_tokens=24)[0]
    order = first_occurrences(ref)
    assert len(order) >= 3, ref  # the reference must show distinct tokens at distinct steps
    (b, ib), (a, ia) = order[1], order[2]  # b appears before a; neither is the first token
    assert ib < ia
    for eos in ([a, b], (a, b), [a, V - 1, b], [b, a]):
        got = generate(model, [[4, 5, 6, 7]], temperature=0, max_new_tokens=24, eos_id=eos)
        assert got == [ref[:ib + 1]], eos
    cfg = GenerationConfig(eos_id=[a, b])
    assert cfg.eos_ids == {a, b}


def test_one_shift_variant_layer_among_full_ones_still_decodes_row_by_row():
    # layer 1 is Longformer (global tokens at absolute indices, so left padding moves them),
    # layer 0 full attention: padding is visible as soon as ANY mechanism is shift-variant.
    model = decoding_gpt(V, 16, positional="learned")
    model.stack.blocks[1].self_attn.attn = registry.build("longformer", window=3,
                                                          global_tokens=2)
    prompts = [[5], [3, 1, 4], [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 12], [2, 7]]
    for kw in (dict(temperature=0), dict(temperature=0.9, top_k=12, seed=7)):
        batched = generate(model, prompts, max_new_tokens=8, **kw)
        seed = kw.pop("seed", None)
        alone = [generate(model, [p], max_new_tokens=8,
                          seed=None if seed is None else seed + b, **kw)[0]
                 for b, p in enumerate(prompts)]
        assert batched == alone


@pytest.mark.parametrize("field, value", [("seed", True), ("seed", 1.0),
                                          ("use_cache", 1), ("use_cache", "no")])
def test_bool_and_int_fields_are_not_interchangeable(field, value):
    with pytest.raises(ConfigError, match=field):
        GenerationConfig(**{field: value})


@pytest.mark.parametrize("penalty", [0.2, 4.0])
def test_repetition_penalty_on_batched_rows_matches_the_hand_computation(penalty):
    # Reference: a plain loop that recomputes the whole sequence and penalizes by hand each
    # row's own tokens (prompt and generated). A penalty below 1 (favouring repeats) is as
    # valid as one above: neither may be ignored.
    model = decoding_gpt(V, 32)
    prompts = [[1, 2, 3, 1, 5, 8], [9, 9, 4, 20, 30, 0], [7, 6, 5, 4, 3, 2]]
    seq = torch.tensor(prompts)
    with torch.no_grad():
        for _ in range(8):
            logits = model(seq)[:, -1]
            seen = torch.zeros_like(logits, dtype=torch.bool)
            for b in range(len(prompts)):
                seen[b, seq[b]] = True
            changed = torch.where(logits > 0, logits / penalty, logits * penalty)
            seq = torch.cat([seq, torch.where(seen, changed, logits).argmax(-1)[:, None]], 1)
    want = seq[:, len(prompts[0]):].tolist()
    for use_cache in (True, False):
        assert generate(model, prompts, temperature=0, max_new_tokens=8, use_cache=use_cache,
                        repetition_penalty=penalty) == want
    assert want != generate(model, prompts, temperature=0, max_new_tokens=8)  # it decides
