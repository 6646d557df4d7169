import pytest
import torch
from torch import nn

from attnlab.attention import KVCache, MultiHeadAttention, available
from attnlab.errors import CapabilityError, ConfigError
from tests.conftest import TINY_OPTIONS


def copy_from_torch(ours: MultiHeadAttention, ref: nn.MultiheadAttention) -> None:
    d = ours.d_model
    with torch.no_grad():
        if ref._qkv_same_embed_dim:
            wq, wk, wv = ref.in_proj_weight.split(d)
        else:
            wq, wk, wv = ref.q_proj_weight, ref.k_proj_weight, ref.v_proj_weight
        bq, bk, bv = ref.in_proj_bias.split(d)
        for proj, w, b in ((ours.q_proj, wq, bq), (ours.k_proj, wk, bk), (ours.v_proj, wv, bv)):
            proj.weight.copy_(w)
            proj.bias.copy_(b)
        ours.out_proj.weight.copy_(ref.out_proj.weight)
        ours.out_proj.bias.copy_(ref.out_proj.bias)


@pytest.mark.parametrize("cross", [False, True])
@pytest.mark.parametrize("padded", [False, True])
def test_equals_torch_multihead_attention(cross, padded):
    d, H, B, T, S = 32, 4, 3, 7, 9
    kdim = 24 if cross else None
    ref = nn.MultiheadAttention(d, H, batch_first=True, kdim=kdim, vdim=kdim).eval()
    ours = MultiHeadAttention(d, H, kdim=kdim, vdim=kdim).eval()
    copy_from_torch(ours, ref)
    x = torch.randn(B, T, d)
    ctx = torch.randn(B, S, kdim) if cross else x
    n_keys = S if cross else T
    keep = torch.ones(B, n_keys, dtype=torch.bool)
    if padded:
        keep[0, -3:] = False
        keep[2, :2] = False
    expected, w_ref = ref(x, ctx, ctx, key_padding_mask=~keep if padded else None,
                          average_attn_weights=False)
    out, w = ours(x, ctx if cross else None, key_padding_mask=keep if padded else None,
                  need_weights=True)
    assert torch.allclose(out, expected, atol=1e-5)
    assert torch.allclose(w, w_ref, atol=1e-5)
    fast, _ = ours(x, ctx if cross else None, key_padding_mask=keep if padded else None)
    assert torch.allclose(fast, expected, atol=1e-5)


def test_causal_equals_torch_with_causal_mask():
    d, H, T = 16, 2, 6
    ref = nn.MultiheadAttention(d, H, batch_first=True).eval()
    ours = MultiHeadAttention(d, H).eval()
    copy_from_torch(ours, ref)
    x = torch.randn(2, T, d)
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    expected, _ = ref(x, x, x, attn_mask=mask)
    assert torch.allclose(ours(x, causal=True)[0], expected, atol=1e-5)


def test_grouped_query_equals_mha_with_repeated_kv_heads():
    d, H, Hkv = 32, 8, 2
    gqa = MultiHeadAttention(d, H, n_kv_heads=Hkv)
    mha = MultiHeadAttention(d, H)
    Dh, groups = d // H, H // Hkv
    with torch.no_grad():
        mha.q_proj.load_state_dict(gqa.q_proj.state_dict())
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
        for src, dst in ((gqa.k_proj, mha.k_proj), (gqa.v_proj, mha.v_proj)):
            w = src.weight.view(Hkv, Dh, d).repeat_interleave(groups, 0).reshape(d, d)
            b = src.bias.view(Hkv, Dh).repeat_interleave(groups, 0).reshape(d)
            dst.weight.copy_(w)
            dst.bias.copy_(b)
    assert gqa.k_proj.weight.shape == (Hkv * Dh, d)
    x = torch.randn(2, 5, d)
    assert torch.allclose(gqa(x, causal=True)[0], mha(x, causal=True)[0], atol=1e-6)


@pytest.mark.parametrize("name", [n for n, c in available().items() if c.kv_cache])
def test_cached_steps_equal_the_full_forward(name):
    mha = MultiHeadAttention(16, 4, n_kv_heads=2, attention=name,
                             attention_options=TINY_OPTIONS[name]).eval()
    x = torch.randn(2, 11, 16)
    full, _ = mha(x, causal=True)
    cache = mha.new_cache()
    outs = [mha(x[:, :4], causal=True, cache=cache)[0]]  # a prefill chunk, then single steps
    for t in range(4, 11):
        outs.append(mha(x[:, t:t + 1], causal=True, cache=cache)[0])
        if cache.keep is not None:
            assert len(cache) <= cache.keep
        assert cache.k.shape[1] == 2  # only the kv heads are stored
    assert cache.seen == 11
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)


def test_cross_attention_cache_is_computed_once():
    mha = MultiHeadAttention(16, 2).eval()
    x, mem = torch.randn(1, 3, 16), torch.randn(1, 5, 16)
    cache = mha.new_cache(cross=True)
    a, _ = mha(x, mem, cache=cache)
    b, _ = mha(x, torch.zeros_like(mem), cache=cache)  # ignored: the memory's keys are cached
    assert torch.allclose(a, b) and cache.k.shape[2] == 5


def test_cache_carries_the_padding_mask_of_past_tokens():
    mha = MultiHeadAttention(8, 2).eval()
    x = torch.randn(2, 6, 8)
    keep = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    full, _ = mha(x, causal=True, key_padding_mask=keep)
    cache = mha.new_cache()
    first, _ = mha(x[:, :4], causal=True, key_padding_mask=keep[:, :4], cache=cache)
    rest = [mha(x[:, t:t + 1], causal=True, cache=cache)[0] for t in (4, 5)]
    assert torch.allclose(torch.cat([first, *rest], 1)[:, 2:], full[:, 2:], atol=1e-5)


def test_kv_cache_reorder_selects_rows():
    c = KVCache()
    k = torch.arange(3.0).view(3, 1, 1, 1)
    c.update(k, k)
    c.reorder(torch.tensor([2, 2, 0]))
    assert c.k.flatten().tolist() == [2.0, 2.0, 0.0]


def test_bad_shapes_and_capabilities_are_clear_errors():
    with pytest.raises(ConfigError, match="not divisible by n_heads"):
        MultiHeadAttention(30, 4)
    with pytest.raises(ConfigError, match="must divide n_heads"):
        MultiHeadAttention(32, 4, n_kv_heads=3)
    local = MultiHeadAttention(16, 2, attention="local", attention_options={"window": 2})
    with pytest.raises(CapabilityError, match="'local' cannot do cross-attention"):
        local(torch.randn(1, 3, 16), torch.randn(1, 5, 16))


def test_inference_cache_writes_into_buffers_and_equals_the_autograd_path():
    """Without autograd the cache appends into preallocated buffers (no per-step copy of the
    past); the keys it hands out are the same as the concatenating path's."""
    mha = MultiHeadAttention(16, 4).eval()
    x = torch.randn(2, 9, 16)
    caches = {True: mha.new_cache(), False: mha.new_cache()}
    outs = {True: [], False: []}
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            for t in range(9):
                outs[grad].append(mha(x[:, t:t + 1], causal=True, cache=caches[grad])[0])
    assert torch.allclose(torch.cat(outs[True], 1), torch.cat(outs[False], 1), atol=1e-6)
    assert torch.equal(caches[True].k, caches[False].k)
    assert caches[False]._buffers is not None and caches[True]._buffers is None
    assert caches[False].k.data_ptr() == caches[False]._buffers[0].data_ptr()  # a view
    caches[False].reorder(torch.tensor([1, 0]))
    assert caches[False]._buffers is None and torch.equal(caches[False].k[0], caches[True].k[1])


def test_one_context_width_for_keys_and_values():
    from attnlab.attention import MultiHeadAttention
    from attnlab.errors import ConfigError

    mha = MultiHeadAttention(16, 2, kdim=5)  # the value projection takes the same width
    x, context = torch.randn(2, 3, 16), torch.randn(2, 4, 5)
    assert mha(x, context=context)[0].shape == (2, 3, 16)
    with pytest.raises(ConfigError, match="kdim 5 != vdim 7: keys and values are projected "
                                          "from the same context"):
        MultiHeadAttention(16, 2, kdim=5, vdim=7)
