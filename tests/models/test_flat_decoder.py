"""The flat decoder against its reference twin, the GPT's modular cached forward: logits at every
step for each part it accepts, tokens through `generate`, and the models it must refuse."""

from unittest import mock

import pytest
import torch

from attnlab.attention import registry
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.generate import GenerationConfig, generate
from attnlab.models import GPT
from attnlab.models.flat_decoder import FlatDecoder, unsupported
from tests.helpers import decoding_gpt

V = 29


def tiny_gpt(**kw) -> GPT:
    return decoding_gpt(V, 24, perturb_vectors=True, **kw)


BATCHES = {  # rows, padded; one unpadded row takes the flat decoder's (d,)-vector path
    "one-row": (1, False), "two-rows": (2, False), "two-rows-left-padded": (2, True)}


def step_logits(model, flat: bool, batch: str, steps: int = 5) -> list[torch.Tensor]:
    """Last-position logits after a prefill and after each of `steps` single tokens."""
    rows, padded = BATCHES[batch]
    ids = torch.tensor([[4, 9, 2, 8, 5], [0, 0, 3, 7, 1]])[:rows]  # row 1 left-padded by 2 if
    real = torch.ones_like(ids, dtype=torch.bool)  # padded
    if padded:
        real[1, :2] = False
    positions = (real.long().cumsum(1) - 1).clamp(min=0)
    kw = dict(key_padding_mask=real, positions=positions) if padded else {}
    decoder = FlatDecoder(model) if flat else None
    cache = decoder.new_cache(rows, ids.shape[1] + steps) if flat else model.new_cache()

    def run(x, **kw):
        return decoder(x, cache=cache, **kw) if flat else model(x, cache=cache, **kw)[:, -1]

    out = []
    with torch.inference_mode():
        out.append(run(ids, **kw))
        for s in range(steps):
            nxt = out[-1].argmax(-1, keepdim=True)  # (B, 1)
            step_kw = {"positions": positions[:, -1:] + s + 1} if padded else {}
            out.append(run(nxt, **step_kw))
    return out


ARCHITECTURES = {
    "gpt2": dict(positional="learned", activation="gelu_tanh"),
    "llama": dict(positional="rope", norm="rmsnorm", activation="swiglu", n_kv_heads=2,
                  bias=False),
    "alibi-mqa": dict(positional="alibi", activation="gelu", n_kv_heads=1),
    "post-norm": dict(positional="sinusoidal", norm_first=False, activation="relu"),
    "no-positions": dict(positional="none", activation="silu", final_norm=False),
    "tied": dict(positional="learned", tie_embeddings=True),
    "eager-weights-path": dict(attention_options={"impl": "eager"}),
}


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_flat_logits_equal_the_modular_cached_forward_at_every_step(arch, batch):
    model = tiny_gpt(**ARCHITECTURES[arch])
    assert unsupported(model) is None
    flat, modular = step_logits(model, True, batch), step_logits(model, False, batch)
    for a, b in zip(flat, modular, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(modular[1], modular[-1], atol=1e-3)  # the steps differ


FLAT_MECHANISMS = [name for name in registry.available()
                   if registry.get(name).capabilities.kv_cache
                   and registry.get(name).capabilities.causal
                   and registry.build(name).cache_keep is None]


@pytest.mark.parametrize("batch", ["one-row", "two-rows-left-padded"])
@pytest.mark.parametrize("attention", FLAT_MECHANISMS)
def test_every_mechanism_that_caches_every_key_decodes_flat(attention, batch):
    model = tiny_gpt(attention=attention)
    assert unsupported(model) is None
    for a, b in zip(step_logits(model, True, batch), step_logits(model, False, batch),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_flat_mechanisms_include_the_exact_and_approximate_families():
    assert {"full", "flash", "performer"} <= set(FLAT_MECHANISMS)


PROMPTS = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]]


@pytest.mark.parametrize("kw", [
    dict(temperature=0),
    dict(temperature=0.9, top_k=10, top_p=0.9, repetition_penalty=1.3, seed=3),
], ids=["greedy", "sampled"])
@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generate_flat_equals_modules_inside_and_beyond_the_context(arch, kw):
    model = tiny_gpt(**ARCHITECTURES[arch])  # row 1 reaches the 24-token context: the window
    flat = generate(model, PROMPTS, max_new_tokens=14, decoder="flat", **kw)  # slides
    assert flat == generate(model, PROMPTS, max_new_tokens=14, decoder="modules", **kw)
    assert flat == generate(model, PROMPTS, max_new_tokens=14, use_cache=False, **kw)
    assert len({t for r in flat for t in r}) > 3


def test_auto_decodes_flat_when_the_model_allows_it():
    model = tiny_gpt()
    calls = mock.Mock(side_effect=FlatDecoder.__call__)
    with mock.patch.object(FlatDecoder, "__call__", lambda self, *a, **k: calls(self, *a, **k)):
        generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6)
        assert calls.call_count == 6  # the prefill, then 5 steps
        calls.reset_mock()
        generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6, decoder="modules")
        generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6, use_cache=False)
    assert calls.call_count == 0


def test_one_unpadded_row_decodes_on_the_vector_path():
    model = tiny_gpt()
    calls = mock.Mock(side_effect=FlatDecoder._one_token)
    with mock.patch.object(FlatDecoder, "_one_token", lambda self, *a: calls(self, *a)):
        generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6)
        assert calls.call_count == 5  # every step after the prefill
        calls.reset_mock()
        generate(model, [[1, 2, 3], [4, 5]], temperature=0, max_new_tokens=6)
    assert calls.call_count == 0


def test_a_hooked_model_decodes_through_its_modules_and_its_hooks_run():
    model = tiny_gpt()
    seen = []
    handle = model.stack.blocks[1].ffn.register_forward_hook(lambda m, a, out: seen.append(out))
    assert unsupported(model) == "module 'stack.blocks.1.ffn' has a forward hook"
    generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6)
    assert len(seen) == 6
    with pytest.raises(CapabilityError, match="forward hook"):
        generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=6, decoder="flat")
    handle.remove()
    assert unsupported(model) is None


def test_global_module_hooks_rule_flat_decoding_out():
    model = tiny_gpt()
    handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, out: None)
    try:
        assert unsupported(model) == "global module hooks are registered"
    finally:
        handle.remove()
    assert unsupported(model) is None


@pytest.mark.parametrize("kw, reason", [
    (dict(attention="local", attention_options={"window": 4}), "does not cache every key"),
    (dict(reversible=True), "reversible layers"),
    (dict(ff_chunks=2), "module 'stack.blocks.0.ffn' is a ChunkedFeedForward"),
])
def test_models_the_flat_decoder_does_not_cover_are_named(kw, reason):
    model = tiny_gpt(**kw)
    assert reason in unsupported(model)
    with pytest.raises(CapabilityError, match=reason):
        FlatDecoder(model)


class LoRALinear(torch.nn.Linear):
    """A Linear with a low-rank update in its forward: the flat step would skip the update."""

    def forward(self, x):
        return super().forward(x) + 0.5 * x[..., :1]


def lora_q(model):
    old = model.stack.blocks[0].self_attn.q_proj
    new = LoRALinear(old.in_features, old.out_features)
    new.load_state_dict(old.state_dict())
    model.stack.blocks[0].self_attn.q_proj = new


def own_forward(model):
    ffn = model.stack.blocks[1].ffn
    ffn.forward = lambda x: 2 * type(ffn).forward(ffn, x)


class Scale(torch.nn.Module):
    def forward(self, x):
        return 2 * x


def scaled_embedding(model):
    model.drop = Scale()


def weight_normed(model):
    fc2 = torch.nn.utils.parametrizations.weight_norm(model.stack.blocks[0].ffn.fc2)
    with torch.no_grad():
        fc2.parametrizations.weight.original0.mul_(2)  # the norms g, doubled


class ScaledNorm(torch.nn.LayerNorm):
    def forward(self, x):
        return 2 * super().forward(x)


def subclassed_final_norm(model):
    model.stack.norm = ScaledNorm(model.config.d_model)


@pytest.mark.parametrize("change, reason", [
    (lora_q, "module 'stack.blocks.0.self_attn.q_proj' is a LoRALinear"),
    (own_forward, "module 'stack.blocks.1.ffn' has a forward of its own"),
    (scaled_embedding, "module 'drop' is a Scale"),
    (weight_normed, "module 'stack.blocks.0.ffn.fc2' is a ParametrizedLinear"),
    (subclassed_final_norm, "module 'stack.norm' is a ScaledNorm"),
])
def test_a_changed_part_decodes_through_its_modules(change, reason):
    model = tiny_gpt()
    reference = generate(model, PROMPTS, temperature=0, max_new_tokens=8)
    change(model)
    model.eval()
    assert unsupported(model).startswith(reason)
    changed = generate(model, PROMPTS, temperature=0, max_new_tokens=8)  # auto: modules
    assert changed == generate(model, PROMPTS, temperature=0, max_new_tokens=8,
                               decoder="modules")
    assert changed != reference  # the change matters, so auto honoured it


def test_autocast_rules_flat_decoding_out():
    model = tiny_gpt()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert unsupported(model) == "autocast is enabled"
        assert len(generate(model, [[1, 2, 3]], temperature=0, max_new_tokens=4)[0]) == 4
    assert unsupported(model) is None


def test_training_mode_and_other_models_are_refused():
    model = tiny_gpt().train()
    assert unsupported(model) == "module 'model' is in training mode (dropout)"
    model.eval().stack.blocks[1].ffn.train()
    assert unsupported(model) == "module 'stack.blocks.1.ffn' is in training mode (dropout)"
    assert unsupported(torch.nn.Linear(2, 2)) == "Linear is not attnlab's GPT"


def test_decoder_option_is_validated():
    with pytest.raises(ConfigError, match="decoder"):
        GenerationConfig(decoder="fast")
    with pytest.raises(ConfigError, match="needs use_cache=True"):
        GenerationConfig(decoder="flat", use_cache=False)


def test_the_cache_refuses_more_tokens_than_it_holds_and_the_prompt_is_checked():
    model = tiny_gpt()
    decoder = FlatDecoder(model)
    with torch.inference_mode():
        cache = decoder.new_cache(1, 4)
        decoder(torch.tensor([[1, 2, 3]]), cache=cache)
        decoder(torch.tensor([[4]]), cache=cache)
        with pytest.raises(CapabilityError, match="holds 4 tokens; 5 were given"):
            decoder(torch.tensor([[5]]), cache=cache)
        with pytest.raises(AttnlabError, match=r"must lie in \[0, 29\)"):
            decoder(torch.tensor([[1, V]]), cache=decoder.new_cache(1, 4))
        cache = decoder.new_cache(1, 4)
        decoder(torch.tensor([[1, 2]]), cache=cache)
        with pytest.raises(AttnlabError, match=r"must lie in \[0, 29\)"):  # later steps too
            decoder(torch.tensor([[V]]), cache=cache)
