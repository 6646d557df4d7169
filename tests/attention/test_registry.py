import pytest
import torch

from attnlab.attention import Attention, Capabilities, available, build, options, register
from attnlab.errors import AttnlabError, ConfigError
from tests.conftest import TINY_OPTIONS


def test_every_registered_mechanism_has_tiny_test_options():
    assert set(available()) == set(TINY_OPTIONS), "add the new mechanism to TINY_OPTIONS"


def test_available_lists_names_with_capabilities():
    caps = available()
    assert {"full", "hard", "local"} <= set(caps)
    assert all(isinstance(c, Capabilities) for c in caps.values())
    assert caps["full"].exact and not caps["local"].cross and not caps["hard"].exact


def test_build_returns_configured_instance():
    attn = build("local", window=7)
    assert isinstance(attn, Attention) and attn.name == "local" and attn.window == 7
    assert options("local")["window"] == 128


def test_unknown_name_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'local'"):
        build("locl")


def test_unknown_option_suggests_nearest():
    with pytest.raises(ConfigError, match=r"no option 'windw'.*did you mean 'window'"):
        build("local", windw=3)


@pytest.mark.parametrize("name, opts, message", [
    ("local", {"window": 0}, "window must be an integer >= 1"),
    ("hard", {"k": 0}, "k must be an integer >= 1"),
    ("full", {"impl": "flashy"}, "unknown attention 'full' impl"),
    ("local", {"impl": "flashy"}, "unknown attention 'local' impl"),
    ("longformer", {"impl": "flashy"}, "unknown attention 'longformer' impl"),
    ("full", {"dropout": 1.5}, "dropout must be in"),
])
def test_invalid_options_are_one_line_errors(name, opts, message):
    with pytest.raises(AttnlabError, match=message) as info:
        build(name, **opts)
    assert "\n" not in str(info.value)


def test_register_makes_a_new_mechanism_buildable():
    @register("_test_uniform")
    class Uniform(Attention):
        capabilities = Capabilities(causal=False, padding_mask=False, cross=True,
                                    kv_cache=False, bias=False, weights=False, exact=False,
                                    permutation_equivariant=True)

        def attend(self, q, k, v, *, causal, key_padding_mask, bias, need_weights):
            return v.mean(2, keepdim=True).expand_as(q), None

    from attnlab.attention import registry

    try:
        attn = build("_test_uniform")
        q = torch.randn(1, 2, 4, 8)
        out, _ = attn(q, q, q)
        assert torch.allclose(out, q.mean(2, keepdim=True).expand_as(q))
        from attnlab.errors import CapabilityError

        with pytest.raises(CapabilityError, match="'_test_uniform' cannot do causal"):
            attn(q, q, q, causal=True)
    finally:
        registry._REGISTRY.pop("_test_uniform")
