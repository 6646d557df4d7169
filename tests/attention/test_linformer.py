import math

import pytest
import torch
from torch import nn

from attnlab.attention import build
from attnlab.errors import AttnlabError, CapabilityError, ConfigError
from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig
from tests.helpers import LargestTensor


def identity_linformer(seq_len, **opts):
    """k = seq_len and E = F = I: the projection keeps every key as it is."""
    attn = build("linformer", seq_len=seq_len, k=seq_len, **opts)
    with torch.no_grad():
        for p in attn.parameters():
            p.copy_(torch.eye(seq_len))
    return attn


@pytest.mark.parametrize("masked", [False, True])
def test_identity_projections_with_k_equal_n_are_full_attention(masked):
    n = 16
    q, k, v = torch.randn(3, 2, 3, n, 8).unbind(0)
    mask = None
    if masked:
        mask = torch.ones(2, n, dtype=torch.bool)
        mask[0, 11:] = False  # right padding
        mask[1, :4] = False  # left padding
    out, w = identity_linformer(n)(q, k, v, key_padding_mask=mask)
    ref, _ = build("full")(q, k, v, key_padding_mask=mask)
    assert w is None
    assert torch.allclose(out, ref, atol=1e-5)


def test_shorter_inputs_and_cross_attention_are_zero_padded_to_seq_len():
    """Keys shorter than seq_len behave as zero-padded: with E = I the padding rows are empty
    projections, masked out, so the result is still full attention over the real keys."""
    attn = identity_linformer(16)
    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 10, 8), torch.randn(2, 3, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False
    out, _ = attn(q, k, v, key_padding_mask=mask)
    ref, _ = build("full")(q, k, v, key_padding_mask=mask)
    assert torch.allclose(out, ref, atol=1e-5)


def test_masked_keys_cannot_contribute_through_the_projection():
    attn = build("linformer", seq_len=12, k=4)
    q, k, v = torch.randn(3, 2, 2, 12, 8).unbind(0)
    mask = torch.ones(2, 12, dtype=torch.bool)
    mask[:, 9:] = False
    out, _ = attn(q, k, v, key_padding_mask=mask)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 9:] = 1e4 * torch.randn(2, 2, 3, 8)
    v2[:, :, 9:] = 1e4 * torch.randn(2, 2, 3, 8)
    out2, _ = attn(q, k2, v2, key_padding_mask=mask)
    assert torch.equal(out, out2)
    # and the mask matters: without it the padded rows are projected in
    assert not torch.allclose(attn(q, k, v)[0], out, atol=1e-3)
    # the first 9 keys alone equal the masked call (the projection is sliced to 9 columns)
    short, _ = attn(q, k[:, :, :9], v[:, :, :9])
    assert torch.allclose(short, out, atol=1e-6)


def test_causal_request_is_a_capability_error():
    attn = build("linformer", seq_len=12, k=6)
    q = torch.randn(1, 2, 12, 8)
    with pytest.raises(CapabilityError, match="'linformer' cannot do causal attention"):
        attn(q, q, q, causal=True)
    assert not attn.capabilities.causal and not attn.capabilities.kv_cache


def test_keys_longer_than_seq_len_are_an_error_naming_seq_len():
    attn = build("linformer", seq_len=12, k=6)
    q, kv = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 13, 8)
    with pytest.raises(AttnlabError, match="13 keys exceed seq_len 12") as info:
        attn(q, kv, kv)
    assert "\n" not in str(info.value)
    out, _ = attn(torch.randn(1, 2, 40, 8), kv[:, :, :12], kv[:, :, :12])  # queries: any length
    assert out.shape == (1, 2, 40, 8)


@pytest.mark.parametrize("opts, message", [
    ({"seq_len": 8, "k": 9}, r"k must be an integer in \[1, seq_len = 8\], got 9"),
    ({"seq_len": 8, "k": 0}, "k must be an integer in"),
    ({"seq_len": 0, "k": 1}, "seq_len must be an integer >= 1"),
    ({"headwise": True}, "headwise=True needs n_heads"),
    ({"n_heads": 4}, "n_heads is only used with headwise=True"),
    ({"dropout": 1.0}, "dropout must be in"),
])
def test_invalid_options_are_one_line_config_errors(opts, message):
    with pytest.raises(ConfigError, match=message) as info:
        build("linformer", **opts)
    assert "\n" not in str(info.value)


def test_share_kv_uses_one_projection_for_keys_and_values():
    shared = build("linformer", seq_len=12, k=5, share_kv=True)
    assert shared.proj_v is None and len(list(shared.parameters())) == 1
    separate = build("linformer", seq_len=12, k=5)
    assert len(list(separate.parameters())) == 2
    with torch.no_grad():
        separate.proj_k.copy_(shared.proj_k)
        separate.proj_v.copy_(shared.proj_k)
    q, k, v = torch.randn(3, 2, 2, 12, 8).unbind(0)
    assert torch.allclose(shared(q, k, v)[0], separate(q, k, v)[0], atol=1e-6)
    with torch.no_grad():
        separate.proj_v.copy_(torch.randn(5, 12))
    assert not torch.allclose(shared(q, k, v)[0], separate(q, k, v)[0], atol=1e-3)


def test_headwise_gives_each_head_its_own_projection():
    H, n, k = 3, 10, 4
    attn = build("linformer", seq_len=n, k=k, headwise=True, n_heads=H)
    assert attn.proj_k.shape == (H, k, n) and attn.proj_v.shape == (H, k, n)
    assert not torch.equal(attn.proj_k[0], attn.proj_k[1])
    q, kk, v = torch.randn(3, 2, H, n, 8).unbind(0)
    mask = torch.ones(2, n, dtype=torch.bool)
    mask[1, 6:] = False
    out, _ = attn(q, kk, v, key_padding_mask=mask)
    for h in range(H):  # head h equals a shared-projection module holding E_h, F_h
        one = build("linformer", seq_len=n, k=k)
        with torch.no_grad():
            one.proj_k.copy_(attn.proj_k[h])
            one.proj_v.copy_(attn.proj_v[h])
        ref, _ = one(q[:, h:h + 1], kk[:, h:h + 1], v[:, h:h + 1], key_padding_mask=mask)
        assert torch.allclose(out[:, h:h + 1], ref, atol=1e-6)
    with pytest.raises(AttnlabError, match="built headwise for n_heads 3, called with 2 heads"):
        attn(q[:, :2], kk[:, :2], v[:, :2])


def test_initialization_is_fairseq_xavier_uniform():
    k, n = 64, 192
    attn = build("linformer", seq_len=n, k=k)
    bound = math.sqrt(3.0 / (k + n))  # xavier_uniform, gain 1/sqrt(2): sqrt(6/(k+n)) / sqrt(2)
    for p in (attn.proj_k, attn.proj_v):
        assert p.abs().max() <= bound
        assert abs(p.std().item() - bound / math.sqrt(3)) < 0.03 * bound
    assert not torch.equal(attn.proj_k, attn.proj_v)


def test_gradients_reach_the_projections_only_on_the_used_columns():
    attn = build("linformer", seq_len=12, k=6)
    q, k, v = (t.requires_grad_() for t in torch.randn(3, 2, 2, 9, 8).unbind(0))
    attn(q, k, v)[0].square().sum().backward()
    for p in (attn.proj_k, attn.proj_v):
        assert p.grad[:, :9].abs().sum() > 0
        assert torch.equal(p.grad[:, 9:], torch.zeros_like(p.grad[:, 9:]))  # the zero padding


def test_dropout_acts_in_training_only():
    attn = build("linformer", seq_len=12, k=6, dropout=0.5)
    q, k, v = torch.randn(3, 1, 2, 12, 8).unbind(0)
    train_a, train_b = attn(q, k, v)[0], attn(q, k, v)[0]
    assert not torch.allclose(train_a, train_b)
    attn.eval()
    assert torch.equal(attn(q, k, v)[0], attn(q, k, v)[0])


def test_memory_is_n_times_k_never_an_n_by_n_matrix():
    n, kp, B, H, Dh = 1024, 64, 1, 2, 16
    q, k, v = (t.requires_grad_() for t in torch.randn(3, B, H, n, Dh).unbind(0))
    mask = torch.ones(B, n, dtype=torch.bool)
    mask[:, -100:] = False
    attn = build("linformer", seq_len=n, k=kp)
    with LargestTensor() as probe:
        out, _ = attn(q, k, v, key_padding_mask=mask)
        out.sum().backward()
    assert probe.numel <= B * H * n * kp  # the (B, H, n, k) scores and the (k, n) projection
    assert probe.numel < n * n / 4


def test_attended_keys_counts_projected_keys_and_projection():
    attn = build("linformer", seq_len=256, k=32)
    assert attn.attended_keys(256, 256, causal=False) == 32 + 32
    assert attn.attended_keys(128, 256, causal=False) == 32 + 64


def test_encoder_trains_with_linformer_and_gpt_says_why_it_cannot():
    torch.manual_seed(1)
    cfg = dict(vocab_size=23, d_model=32, n_heads=4, n_layers=2, attention="linformer",
               attention_options={"seq_len": 16, "k": 8})
    model = Encoder(EncoderConfig(num_classes=3, **cfg))
    idx = torch.randint(23, (8, 16))
    keep = torch.ones(8, 16, dtype=torch.bool)
    keep[::2, 12:] = False
    labels = idx[:, 0] % 3
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = nn.functional.cross_entropy(model(idx, key_padding_mask=keep), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    for name, p in model.named_parameters():
        if "proj_" in name:  # E and F are learned
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # a decoder needs causal attention: refused with a clear error (at config or call time)
    with pytest.raises(AttnlabError, match=r"attention 'linformer' (is not|cannot do) causal"):
        GPT(GPTConfig(**cfg))(idx)


@pytest.mark.parametrize("headwise", [False, True])
def test_unmasked_path_equals_the_masked_path_and_the_product_written_out(headwise):
    """Without a mask (and E feeding every projected row, as a random E does) the softmax takes
    no mask and each projection is one einsum over all batches and heads. It must equal an
    all-true mask's path and softmax(q (E k)^T / sqrt(Dh)) (F v) per batch and head, in
    float64, values and gradients."""
    B, H, n, Dh = 2, 3, 12, 4
    attn = build("linformer", seq_len=16, k=5, headwise=headwise,
                 n_heads=H if headwise else None).double()
    # As MultiHeadAttention passes them: (B, H, n, Dh) views of (B, n, H, Dh) memory.
    q, k, v = (t.transpose(1, 2).requires_grad_() for t in torch.randn(
        3, B, n, H, Dh, dtype=torch.float64))
    out, _ = attn(q, k, v)
    masked, _ = attn(q, k, v, key_padding_mask=torch.ones(B, n, dtype=torch.bool))
    assert torch.allclose(out, masked, atol=1e-14)
    ref = torch.empty_like(out)
    for h in range(H):
        E = (attn.proj_k[h] if headwise else attn.proj_k)[:, :n]
        Fm = (attn.proj_v[h] if headwise else attn.proj_v)[:, :n]
        for b in range(B):
            scores = q[b, h] @ (E @ k[b, h]).T / Dh**0.5
            ref[b, h] = scores.softmax(-1) @ (Fm @ v[b, h])
    assert torch.allclose(out, ref, atol=1e-12)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v, attn.proj_k), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v, attn.proj_k), g)
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(grads, ref_grads, strict=True))


def test_queries_in_blocks_equal_one_block(monkeypatch):
    """Long query sequences are scored a block of queries at a time; blocks of the minimum
    size (64, and a remainder) must give the one-block result, values and gradients."""
    from attnlab.attention import linformer

    attn = build("linformer", seq_len=40, k=6).double()
    q = torch.randn(2, 3, 150, 4, dtype=torch.float64, requires_grad=True)
    k, v = torch.randn(2, 2, 3, 40, 4, dtype=torch.float64).unbind(0)
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1, 30:] = False
    one, _ = attn(q, k, v, key_padding_mask=mask)
    monkeypatch.setattr(linformer, "SCORES_PER_BLOCK", 1)  # -> blocks of 64, 64 and 22 queries
    blocks, _ = attn(q, k, v, key_padding_mask=mask)
    assert torch.allclose(blocks, one, atol=1e-14)
    g = torch.randn_like(one)
    assert torch.allclose(torch.autograd.grad(blocks, q, g)[0], torch.autograd.grad(one, q, g)[0],
                          atol=1e-14)
