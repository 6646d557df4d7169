import math
from itertools import pairwise

import pytest
import torch
from torch import nn

from attnlab.attention import build
from attnlab.attention.masks import dense_keep_mask
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.layers import ALiBiPositional
from attnlab.models import GPT, GPTConfig
from tests.helpers import LargestTensor


def naive_reference(attn, q, k, v, *, causal, key_padding_mask=None):
    """Linear attention written out in O(Tq Tk): the kernel matrix phi(Q) phi(K)^T from the same
    features, unstabilized, masked with the dense helper, normalized row by row."""
    kernel = attn.positive_features(q) @ attn.positive_features(k).transpose(-1, -2)
    keep = dense_keep_mask(q.shape[2], k.shape[2], causal=causal,
                           key_padding_mask=key_padding_mask)
    if keep is not None:
        kernel = kernel * keep
    den = kernel.sum(-1, keepdim=True)
    return torch.where(den > 0, (kernel @ v) / torch.where(den > 0, den, 1.0), 0.0)


def padding_mask(B=2, T=20):
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[0, 15:] = False  # right padding
    mask[1, :4] = False  # left padding: the first causal queries of row 1 see no key
    return mask


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 8, 20, 64])
@pytest.mark.parametrize("n_queries", [20, 6, 1])
def test_causal_chunked_equals_naive_causal_reference(chunk_size, n_queries):
    attn = build("performer", nb_features=32, chunk_size=chunk_size)
    q = torch.randn(2, 3, n_queries, 8)  # queries are the last n_queries positions
    k, v = torch.randn(2, 2, 3, 20, 8).unbind(0)
    mask = padding_mask()
    out, _ = attn(q, k, v, causal=True, key_padding_mask=mask)
    ref = naive_reference(attn, q, k, v, causal=True, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)
    if n_queries == 20:  # left-padded row: queries before the first real key give zeros
        assert torch.equal(out[1, :, :4], torch.zeros_like(out[1, :, :4]))


@pytest.mark.parametrize("n_queries", [20, 7, 33])
def test_noncausal_equals_naive_reference(n_queries):
    attn = build("performer", nb_features=48)
    q = torch.randn(2, 3, n_queries, 8)  # cross-attention: any number of queries
    k, v = torch.randn(2, 2, 3, 20, 8).unbind(0)
    mask = padding_mask()
    out, _ = attn(q, k, v, key_padding_mask=mask)
    ref = naive_reference(attn, q, k, v, causal=False, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)


def test_causal_cross_attention_with_more_queries_than_keys():
    attn = build("performer", nb_features=16, chunk_size=3)
    q, (k, v) = torch.randn(1, 2, 9, 8), torch.randn(2, 1, 2, 4, 8).unbind(0)
    out, _ = attn(q, k, v, causal=True)
    assert torch.allclose(out, naive_reference(attn, q, k, v, causal=True), atol=1e-5)


def test_dense_weights_path_is_the_normalized_kernel_matrix():
    attn = build("performer", nb_features=32)
    q, k, v = torch.randn(3, 2, 2, 12, 8).unbind(0)
    pq, pk = attn.positive_features(q), attn.positive_features(k)
    _, w = attn(q, k, v, causal=True, need_weights=True)
    kernel = (pq @ pk.transpose(-1, -2)).tril()
    assert torch.allclose(w, kernel / kernel.sum(-1, keepdim=True), atol=1e-6)


def test_kernel_estimate_error_falls_as_features_grow():
    """Averaged over feature draws, the error against exact softmax attention shrinks with m
    (about 1 / sqrt(m): a factor 2 per 4x features)."""
    q, k, v = torch.randn(3, 1, 4, 48, 16).unbind(0)
    q, k = q / 2, k / 2  # moderate norms: the positive estimator's variance grows with them
    exact, _ = build("full")(q, k, v)
    errors = []
    for m in (16, 64, 256, 1024):
        per_seed = []
        for seed in range(6):
            out, _ = build("performer", nb_features=m, seed=seed)(q, k, v)
            per_seed.append(((out - exact).norm() / exact.norm()).item())
        errors.append(sum(per_seed) / len(per_seed))
    assert all(a > b for a, b in pairwise(errors)), errors
    assert errors[-1] < errors[0] / 3, errors
    assert errors[-1] < 0.15, errors


def test_positive_features_are_positive_and_estimate_the_softmax_kernel():
    attn = build("performer", nb_features=4096, seed=3)
    x = torch.randn(1, 1, 6, 16) / 4
    y = torch.randn(1, 1, 6, 16) / 4
    phi_x, phi_y = attn.positive_features(x), attn.positive_features(y)
    assert phi_x.shape == (1, 1, 6, 4096)
    assert (phi_x > 0).all() and (phi_y > 0).all()
    estimate = phi_x @ phi_y.transpose(-1, -2)
    exact = torch.exp(x @ y.transpose(-1, -2) / math.sqrt(16))
    assert (estimate - exact).norm() / exact.norm() < 0.04


def test_features_are_orthogonal_blocks_with_chi_distributed_norms():
    m, d = 40, 16
    attn = build("performer", nb_features=m, seed=0)
    attn(*torch.randn(3, 1, 1, 4, d).unbind(0))
    w = attn.features
    assert w.shape == (m, d) and w.dtype == torch.float32
    directions = w / w.norm(dim=1, keepdim=True)
    for start in range(0, m, d):  # blocks of d rows: 16, 16 and the first 8 of a third
        block = directions[start:start + d]
        assert torch.allclose(block @ block.T, torch.eye(len(block)), atol=1e-5)
    norms = w.norm(dim=1)
    assert norms.std() > 0.2  # resampled per row, not the constant sqrt(d)
    big = build("performer", nb_features=4000, seed=0)
    big(*torch.randn(3, 1, 1, 2, d).unbind(0))
    # chi(d): E[|w|^2] = d
    assert abs(big.features.square().sum(1).mean().item() - d) < 0.05 * d


def test_memory_stays_linear_when_causal_at_n_2048():
    n, m, B, H, Dh = 2048, 128, 1, 2, 16
    q, k, v = (t.requires_grad_() for t in torch.randn(3, B, H, n, Dh).unbind(0))
    attn = build("performer", nb_features=m, chunk_size=64)
    with LargestTensor() as probe:
        out, _ = attn(q, k, v, causal=True)
        out.sum().backward()
    assert probe.numel <= B * H * n * m  # the (B, H, n, m) features; chunks are far smaller
    assert probe.numel < n * n / 4
    with LargestTensor() as dense:  # the probe does see the n x n path when it runs
        attn(q[:, :, :512], k[:, :, :512], v[:, :, :512], causal=True, need_weights=True)
    assert dense.numel >= B * H * 512 * 512


def test_redraw_changes_features_in_training_only():
    attn = build("performer", nb_features=16, redraw=True, seed=5)
    q, k, v = torch.randn(3, 1, 2, 6, 8).unbind(0)
    attn(q, k, v)
    first = attn.features.clone()
    out_a, _ = attn(q, k, v)
    second = attn.features.clone()
    out_b, _ = attn(q, k, v)
    assert not torch.equal(first, second) and not torch.equal(second, attn.features)
    assert not torch.allclose(out_a, out_b)
    attn.eval()
    frozen = attn.features.clone()
    assert torch.equal(attn(q, k, v)[0], attn(q, k, v)[0])
    assert torch.equal(frozen, attn.features)
    fixed = build("performer", nb_features=16, seed=5).train()  # redraw off: never redrawn
    fixed(q, k, v)
    drawn = fixed.features.clone()
    fixed(q, k, v)
    assert torch.equal(drawn, fixed.features)


def test_features_are_a_seeded_buffer_that_round_trips_through_state_dict():
    q, k, v = torch.randn(3, 1, 2, 6, 8).unbind(0)
    a = build("performer", nb_features=16, seed=11, redraw=True)
    assert "features" in dict(a.named_buffers()) and not list(a.parameters())
    a(q, k, v)
    a(q, k, v)  # a redraw: the checkpoint must carry the current draw, not the seed's first
    b = build("performer", nb_features=16, seed=11, redraw=True)
    b(q, k, v)
    assert not torch.equal(a.features, b.features)
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.features, b.features)
    fresh = build("performer", nb_features=16, seed=0).eval()  # never called: empty buffer
    fresh.load_state_dict(a.state_dict())
    a.eval()
    assert torch.equal(fresh(q, k, v)[0], a(q, k, v)[0])
    # the draw counter travels too: the next redraw of both is the same
    a.train()
    fresh.train()
    fresh.redraw = True
    a(q, k, v)
    fresh(q, k, v)
    assert torch.equal(a.features, fresh.features)


def build_and_draw(seed, q):
    attn = build("performer", nb_features=16, seed=seed)
    attn(q, q, q)
    return attn.features


def test_seed_makes_the_draw_reproducible():
    q = torch.randn(1, 2, 5, 8)
    assert torch.equal(build_and_draw(3, q), build_and_draw(3, q))
    assert not torch.equal(build_and_draw(3, q), build_and_draw(4, q))
    torch.manual_seed(123)  # no seed: taken from torch's generator at construction
    a = build("performer", nb_features=16)
    torch.manual_seed(123)
    b = build("performer", nb_features=16)
    a(q, q, q)
    b(q, q, q)
    assert torch.equal(a.features, b.features)


def test_stabilized_where_the_raw_features_underflow():
    """Large norms push every raw feature of a row below float32's range (exp(-150)); the
    stabilized computation still equals the float64 reference."""
    attn = build("performer", nb_features=32, chunk_size=4)
    q, k, v = torch.randn(3, 1, 2, 12, 8).unbind(0)
    q, k = q * 12, k * 12
    assert (attn.positive_features(k).amax(-1) == 0).any()  # whole rows underflow unstabilized
    for causal in (False, True):
        out, _ = attn(q, k, v, causal=causal)
        ref = naive_reference(attn, q.double(), k.double(), v.double(), causal=causal)
        assert ref.abs().sum(-1).min() > 0  # float64 still resolves every row
        assert torch.allclose(out.double(), ref, atol=1e-4)


def test_causal_output_never_depends_on_future_keys_even_dominant_ones():
    """The key offset is a running max over the keys a query may see. Past keys of large norm
    have tiny features (logits near -150); a future key placed at a feature's mode has the
    largest logit possible, |w|^2 / 2. An offset taken over all keys, as in the reference
    code, would push the past keys below float32's range and zero the past outputs."""
    attn = build("performer", nb_features=32, chunk_size=8)
    q, k, v = torch.randn(3, 1, 2, 16, 8).unbind(0)
    k = k * 12
    out, _ = attn(q, k, v, causal=True)
    for future in (5, 11):  # inside the queries' chunk, and in a later chunk
        k2 = k.clone()
        k2[:, :, future] = attn.features[0] * 8 ** 0.25  # k' = k * Dh^(-1/4) = w_0
        out2, _ = attn(q, k2, v, causal=True)
        assert torch.equal(out[:, :, :future], out2[:, :, :future])
        ref = naive_reference(attn, q.double(), k2.double(), v.double(), causal=True)
        assert torch.allclose(out2.double(), ref, atol=1e-4)


@pytest.mark.parametrize("opts, message", [
    ({"nb_features": 0}, "nb_features must be an integer >= 1"),
    ({"chunk_size": 0}, "chunk_size must be an integer >= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"seed": "abc"}, "seed must be an integer >= 0"),
    ({"redraw": "yes"}, "redraw must be true or false"),
    ({"dropout": 0.1}, "has no option 'dropout'"),
])
def test_invalid_options_are_one_line_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message) as info:
        build("performer", **opts)
    assert "\n" not in str(info.value)


def test_head_dim_must_stay_the_one_features_were_drawn_for():
    attn = build("performer", nb_features=8)
    attn(*torch.randn(3, 1, 1, 4, 8).unbind(0))
    with pytest.raises(AttnlabError, match="drawn for head dim 8, called with head dim 4"):
        attn(*torch.randn(3, 1, 1, 4, 4).unbind(0))


def test_no_bias_capability():
    attn = build("performer", nb_features=8)
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(CapabilityError, match="'performer' cannot do an additive"):
        attn(q, q, q, causal=True, bias=ALiBiPositional(2).attention_bias)


def test_gpt_learns_and_decodes_with_a_kv_cache():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, d_model=32, n_heads=4, n_layers=2, max_len=32,
                          positional="rope", attention="performer",
                          attention_options={"nb_features": 32, "chunk_size": 5}))
    idx = torch.randint(17, (8, 17))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1),
                                           idx[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.25 * losses[0]  # memorizes the batch
    model.eval()
    full = model(idx[:2])
    cache = model.new_cache()
    steps = [model(idx[:2, :7], cache=cache)]
    steps += [model(idx[:2, t:t + 1], cache=cache) for t in range(7, 17)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True])
def test_noncausal_shared_key_offset_equals_the_per_key_offsets(masked):
    """Non-causal keys are stabilized at once at one offset (the largest logit over the real
    keys), in place; the weights path keeps per-key offsets. Both, and an all-true mask, give
    one output, in float64; gradients are checked without a mask too."""
    attn = build("performer", nb_features=32).double()
    q, k, v = torch.randn(3, 2, 3, 20, 8, dtype=torch.float64).unbind(0)
    k = k * 3  # spread the keys' logits, so that offsets matter
    mask = padding_mask() if masked else None
    out, _ = attn(q, k, v, key_padding_mask=mask)
    per_key, _ = attn(q, k, v, key_padding_mask=mask, need_weights=True)
    assert torch.allclose(out, per_key, atol=1e-12)
    if not masked:
        all_real, _ = attn(q, k, v, key_padding_mask=torch.ones(2, 20, dtype=torch.bool))
        assert torch.allclose(out, all_real, atol=1e-14)
    small = [t[:1, :2, :7].clone().requires_grad_() for t in (q, k, v)]
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, c=causal: attn(q, k, v, causal=c, key_padding_mask=(
                mask[:1, :7] if masked else None))[0], small, eps=1e-6, atol=1e-5)


def test_trained_features_load_into_a_fresh_model(tmp_path):
    """The features are drawn lazily, so a fresh model's buffer is empty: loading a saved
    model must adopt the saved draw (and give the same outputs), not refuse its shape."""
    from safetensors.torch import save_file

    from attnlab.models import Encoder, EncoderConfig
    from attnlab.train.checkpoint import load_model_weights, unique_state_dict

    cfg = EncoderConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_len=12,
                        attention="performer", attention_options={"nb_features": 8})
    torch.manual_seed(0)
    trained = Encoder(cfg).eval()
    idx = torch.randint(20, (2, 12))
    want = trained(idx)  # draws the features
    save_file(unique_state_dict(trained), str(tmp_path / "model.safetensors"))
    torch.manual_seed(1)
    fresh = Encoder(cfg).eval()
    load_model_weights(fresh, tmp_path / "model.safetensors")
    assert torch.equal(fresh(idx), want)
