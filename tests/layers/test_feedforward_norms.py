"""Feed-forward networks, norms and the Block's residual ordering, against hand computations."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from attnlab.attention.multihead import MultiHeadAttention
from attnlab.errors import ConfigError
from attnlab.layers import Block, FeedForward, build_norm

# ---------------------------------------------------------------------------------------------
# FeedForward


def gelu_tanh_by_hand(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def gelu_erf_by_hand(x):
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


HAND_ACTIVATIONS = {
    "relu": lambda x: x.clamp(min=0),
    "gelu": gelu_erf_by_hand,
    "gelu_tanh": gelu_tanh_by_hand,
    "silu": lambda x: x * torch.sigmoid(x),
}


def linear(layer, x):
    out = x @ layer.weight.T
    return out if layer.bias is None else out + layer.bias


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("activation", sorted(HAND_ACTIVATIONS))
def test_feedforward_equals_fc2_act_fc1(activation, bias):
    ffn = FeedForward(12, 20, activation, bias=bias).eval()
    assert ffn.fc_up is None and (ffn.fc1.bias is not None) == bias
    x = torch.randn(2, 5, 12) * 3  # wide enough to reach the activations' nonlinear parts
    expected = linear(ffn.fc2, HAND_ACTIVATIONS[activation](linear(ffn.fc1, x)))
    torch.testing.assert_close(ffn(x), expected)


def test_gelu_and_gelu_tanh_differ():
    """The two GELUs are different functions, so the tests above tell them apart."""
    x = torch.linspace(-4, 4, 101)
    assert (gelu_tanh_by_hand(x) - gelu_erf_by_hand(x)).abs().max() > 1e-4


@pytest.mark.parametrize("bias", [True, False])
def test_swiglu_equals_silu_gate_times_up(bias):
    ffn = FeedForward(12, 20, "swiglu", bias=bias).eval()
    assert ffn.fc_up is not None and ffn.fc_up.weight.shape == (20, 12)
    x = torch.randn(3, 4, 12)
    gate = linear(ffn.fc1, x)
    expected = linear(ffn.fc2, gate * torch.sigmoid(gate) * linear(ffn.fc_up, x))
    torch.testing.assert_close(ffn(x), expected)


def test_feedforward_dropout_only_in_training():
    ffn = FeedForward(8, 16, "relu", dropout=0.5)
    x = torch.randn(4, 6, 8)
    expected = linear(ffn.fc2, linear(ffn.fc1, x).clamp(min=0))
    torch.testing.assert_close(ffn.eval()(x), expected)
    assert not torch.allclose(ffn.train()(x), expected)


@pytest.mark.parametrize(("name", "nearest"), [("swiglue", "swiglu"), ("rel", "relu"),
                                               ("gelu_tan", "gelu_tanh")])
def test_feedforward_unknown_activation_suggests_nearest(name, nearest):
    with pytest.raises(ConfigError) as info:
        FeedForward(8, 16, name)
    assert f"did you mean '{nearest}'" in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------
# Norms


@pytest.mark.parametrize("eps", [1e-5, 1e-6, 0.1])
def test_rmsnorm_equals_hand_and_hf_llama(eps):
    d = 16
    norm = build_norm("rmsnorm", d, eps)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d))
    x = torch.randn(3, 5, d) * 2 + 0.5
    by_hand = x / torch.sqrt((x ** 2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(x), by_hand)
    ref = LlamaRMSNorm(d, eps=eps)
    with torch.no_grad():
        ref.weight.copy_(norm.weight)
    torch.testing.assert_close(norm(x), ref(x))
    # no centering: the mean is not removed (unlike LayerNorm)
    assert not torch.allclose(norm(x), F.layer_norm(x, (d,), norm.weight, None, eps), atol=1e-3)


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_equals_functional(bias):
    d, eps = 16, 1e-5
    norm = build_norm("layernorm", d, eps, bias=bias)
    assert (norm.bias is not None) == bias
    with torch.no_grad():
        norm.weight.copy_(torch.randn(d))
        if bias:
            norm.bias.copy_(torch.randn(d))
    x = torch.randn(3, 5, d) * 2 + 0.5
    expected = F.layer_norm(x, (d,), norm.weight, norm.bias, eps)
    torch.testing.assert_close(norm(x), expected)
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    by_hand = (x - mean) / torch.sqrt(var + eps) * norm.weight
    if bias:
        by_hand = by_hand + norm.bias
    torch.testing.assert_close(norm(x), by_hand, atol=1e-5, rtol=1e-5)


def test_norm_eps_is_used():
    x = torch.randn(2, 8) * 0.1
    assert not torch.allclose(build_norm("rmsnorm", 8, 1e-6)(x), build_norm("rmsnorm", 8, 1.0)(x))
    assert not torch.allclose(build_norm("layernorm", 8, 1e-6)(x),
                              build_norm("layernorm", 8, 1.0)(x))


@pytest.mark.parametrize(("name", "nearest"), [("rms_norm", "rmsnorm"),
                                               ("layer_norm", "layernorm")])
def test_build_norm_unknown_is_config_error(name, nearest):
    with pytest.raises(ConfigError) as info:
        build_norm(name, 8)
    assert f"did you mean '{nearest}'" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Block


def attention_by_hand(mha, x, causal):
    B, T, d = x.shape
    H, Dh = mha.n_heads, mha.head_dim
    q = linear(mha.q_proj, x).view(B, T, H, Dh).transpose(1, 2)
    k = linear(mha.k_proj, x).view(B, T, H, Dh).transpose(1, 2)
    v = linear(mha.v_proj, x).view(B, T, H, Dh).transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(Dh)
    if causal:
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
    return linear(mha.out_proj, out)


def layer_norm_by_hand(norm, x):
    mean = x.mean(-1, keepdim=True)
    var = x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias


def tiny_block(norm_first):
    d = 16
    block = Block(MultiHeadAttention(d, 4, attention="full"), FeedForward(d, 32, "gelu"),
                  lambda: nn.LayerNorm(d), norm_first=norm_first, dropout=0.0).eval()
    with torch.no_grad():  # distinct, non-trivial norms so their placement matters
        for norm in (block.attn_norm, block.ffn_norm):
            norm.weight.copy_(torch.rand(d) + 0.5)
            norm.bias.copy_(torch.randn(d))
    assert block.attn_norm is not block.ffn_norm
    return block


@pytest.mark.parametrize("causal", [False, True])
def test_pre_norm_block_by_hand(causal):
    block = tiny_block(norm_first=True)
    x = torch.randn(2, 6, 16)
    h = x + attention_by_hand(block.self_attn, layer_norm_by_hand(block.attn_norm, x), causal)
    expected = h + block.ffn(layer_norm_by_hand(block.ffn_norm, h))
    with torch.no_grad():
        torch.testing.assert_close(block(x, causal=causal), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_post_norm_block_by_hand(causal):
    block = tiny_block(norm_first=False)
    x = torch.randn(2, 6, 16)
    h = layer_norm_by_hand(block.attn_norm, x + attention_by_hand(block.self_attn, x, causal))
    expected = layer_norm_by_hand(block.ffn_norm, h + block.ffn(h))
    with torch.no_grad():
        torch.testing.assert_close(block(x, causal=causal), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_residual_dropout_only_in_training(norm_first):
    block = tiny_block(norm_first)
    dropped = Block(block.self_attn, block.ffn, lambda: nn.LayerNorm(16), norm_first=norm_first,
                    dropout=0.5)
    dropped.load_state_dict(block.state_dict())
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        torch.testing.assert_close(dropped.eval()(x), block(x))
        assert not torch.allclose(dropped.train()(x), block(x), atol=1e-3)
    # p = 0 builds no dropout modules: decoding would pay a module call per sublayer for them
    assert not any(isinstance(m, (nn.Dropout, nn.Identity)) for m in block.modules())


def test_pre_and_post_norm_differ_on_same_weights():
    pre = tiny_block(norm_first=True)
    post = tiny_block(norm_first=False)
    post.load_state_dict(pre.state_dict())
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        assert not torch.allclose(pre(x), post(x), atol=1e-3)
