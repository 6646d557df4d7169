"""`reversible` and `ff_chunks` in model configs, against the eager computation they stand for.

The twin is written out here from the Blocks' own modules with ordinary autograd:
y1 = x1 + Attn(x2), y2 = x2 + FFN(y1) per layer, streams averaged at the end.
"""

import pytest
import torch
from torch import nn

from attnlab.errors import CapabilityError, ConfigError
from attnlab.generate import generate
from attnlab.models import GPT, Encoder, EncoderConfig, EncoderDecoder, GPTConfig, Seq2SeqConfig
from attnlab.models.transformer import TransformerStack
from tests.helpers import LargestTensor

V, D, D_FF = 31, 32, 128
LSH = {"n_buckets": 4, "n_hashes": 2, "chunk_size": 4}  # the paper's shared QK (default)


def tiny(kind, **kw):
    base = dict(vocab_size=V, d_model=D, n_heads=4, n_layers=2, d_ff=D_FF, max_len=64)
    base.update(kw)
    if kind == "gpt":
        return GPT(GPTConfig(**base))
    return Encoder(EncoderConfig(**base, num_classes=3))


def batch(kind, B=3, T=11):
    idx = torch.randint(V, (B, T))
    keep = torch.ones(B, T, dtype=torch.bool)
    keep[1, 7:] = False  # padding: the encoder gets a mask, the reversible path must honour it
    return idx, (keep if kind == "encoder" else None)


def loss_of(kind, model, idx, keep, features=None):
    """Next-token loss (GPT) or 3-class loss (Encoder), from the model or from given features."""
    if features is None:
        features = model.forward_features(idx, key_padding_mask=keep)
    if kind == "gpt":
        return nn.functional.cross_entropy(model.forward_head(features)[:, :-1].flatten(0, 1),
                                           idx[:, 1:].flatten())
    logits = model.forward_head(features, key_padding_mask=keep)
    return nn.functional.cross_entropy(logits, idx[:, 0] % 3)


def twin_features(kind, model, idx, keep):
    """The reversible stack written out with ordinary autograd, from the Blocks' modules."""
    causal = kind == "gpt"
    x = model.drop(model.positional.embed(model.tok_emb(idx)))
    x1 = x2 = x
    for blk in model.stack.blocks:
        attn, _ = blk.self_attn(blk.attn_norm(x2), causal=causal, key_padding_mask=keep,
                                positional=model.positional)
        x1 = x1 + blk.dropout(attn)
        x2 = x2 + blk.dropout(blk.ffn(blk.ffn_norm(x1)))
    return model.stack.norm((x1 + x2) / 2)


def named_grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kind, positional", [("gpt", "rope"), ("encoder", "learned")])
@pytest.mark.parametrize("attention, options", [("full", {}), ("lsh", LSH)])
def test_reversible_model_equals_its_eager_twin_in_loss_and_every_gradient(
        kind, positional, attention, options):
    model = tiny(kind, n_layers=3, reversible=True, positional=positional, dropout=0.1,
                 attention=attention, attention_options=options).double().train()
    idx, keep = batch(kind)
    torch.manual_seed(1)  # the same dropout masks in both: the twin draws them in the same order
    loss = loss_of(kind, model, idx, keep)
    loss.backward()
    got = named_grads(model)
    model.zero_grad()
    torch.manual_seed(1)
    want_loss = loss_of(kind, model, idx, keep, twin_features(kind, model, idx, keep))
    want_loss.backward()
    want = named_grads(model)
    assert torch.allclose(loss, want_loss, atol=1e-12)
    assert got.keys() == want.keys() == {n for n, _ in model.named_parameters()}
    for name, w in want.items():
        assert torch.allclose(got[name], w, atol=1e-10, rtol=0), name
    assert all(w.abs().sum() > 0 for w in want.values())  # no dead parameter (shared QK too)


def test_reversible_is_another_function_of_the_same_parameters():
    """Same parameter names and count as the plain stack, and a plain checkpoint loads."""
    plain, rev = tiny("gpt", ff_chunks=4), tiny("gpt", ff_chunks=4, reversible=True)
    assert [n for n, _ in rev.named_parameters()] == [n for n, _ in plain.named_parameters()]
    assert rev.state_dict().keys() == plain.state_dict().keys()
    rev.load_state_dict(plain.state_dict())  # strict
    assert rev.num_parameters() == plain.num_parameters()
    assert rev.flops_per_token(16) == plain.flops_per_token(16)
    idx, _ = batch("gpt")
    assert not torch.allclose(rev(idx), plain(idx), atol=1e-3)  # two streams: not the same map
    rev.eval()
    assert not rev.stack.reversible.training  # follows the model: no RNG saved for replay
    rev.train()
    assert rev.stack.reversible.training


def activation_bytes(model, fn):
    """Bytes of the distinct storages autograd saves for backward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t  # kept alive until the hook context ends, so no storage address is reused

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(n for ptr, n in saved.items() if ptr not in params)


@pytest.mark.parametrize("kind", ["gpt", "encoder"])
def test_activation_memory_is_flat_in_depth_for_reversible_and_grows_for_plain(kind):
    idx, keep = batch(kind, B=2, T=32)
    kept = {}
    for reversible in (False, True):
        for depth in (2, 4):
            model = tiny(kind, n_layers=depth, reversible=reversible).train()
            kept[reversible, depth] = activation_bytes(
                model, lambda m=model: loss_of(kind, m, idx, keep))
    assert kept[True, 4] == kept[True, 2]
    assert kept[False, 4] > 1.5 * kept[False, 2]
    assert kept[False, 2] > 2 * kept[True, 2]


def chunked_twin(kind, chunk, **kw):
    """A model with `ff_chunks=chunk` and the same weights as an unchunked one."""
    torch.manual_seed(3)
    plain = tiny(kind, **kw).double()
    chunked = tiny(kind, ff_chunks=chunk, **kw).double()
    chunked.load_state_dict({k.replace(".ffn.", ".ffn.ffn."): v
                             for k, v in plain.state_dict().items()})
    return plain, chunked


@pytest.mark.parametrize("kind", ["gpt", "encoder"])
@pytest.mark.parametrize("reversible", [False, True])
def test_ff_chunks_equal_the_unchunked_model_in_loss_and_gradients(kind, reversible):
    plain, chunked = chunked_twin(kind, 4, reversible=reversible)  # T = 11: a ragged last chunk
    idx, keep = batch(kind)
    grads = []
    for model in (plain, chunked):
        loss = loss_of(kind, model, idx, keep)
        loss.backward()
        grads.append((loss, [p.grad for p in model.parameters()]))
    (loss, want), (got_loss, got) = grads
    assert torch.allclose(got_loss, loss, atol=1e-12)
    for g, w in zip(got, want, strict=True):
        assert torch.allclose(g, w, atol=1e-12)


@pytest.mark.parametrize("reversible", [False, True])
def test_ff_chunks_never_hold_a_full_hidden_activation(reversible):
    B, T, chunk = 2, 24, 4
    idx = torch.randint(V, (B, T))
    for ff_chunks in (0, chunk):
        model = tiny("gpt", ff_chunks=ff_chunks, reversible=reversible).train()
        with LargestTensor() as probe:
            loss_of("gpt", model, idx, None).backward()
        if ff_chunks:
            assert probe.numel < B * T * D_FF  # at most one chunk's (B, chunk, d_ff) and smaller
        else:
            assert probe.numel >= B * T * D_FF  # the probe sees the whole one when it is there


def test_a_tiny_reversible_lsh_gpt_learns():
    """Reversible layers, chunked FFN and shared-QK lsh together: the loss falls."""
    model = tiny("gpt", reversible=True, ff_chunks=4, attention="lsh", attention_options=LSH,
                 dropout=0.1).train()
    pattern = torch.tensor([1, 5, 9, 2, 7, 3, 8, 4])
    idx = pattern.repeat(4, 2)[:, :15]  # (4, 15): a periodic sequence, learnable in a few steps
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = loss_of("gpt", model, idx, None)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_reversible_gpt_generates_without_a_cache_and_refuses_one():
    model = tiny("gpt", reversible=True)
    tokens = generate(model, [[1, 2, 3]], max_new_tokens=4, temperature=0, use_cache=False)
    assert len(tokens[0]) == 4
    with pytest.raises(CapabilityError, match="reversible=True layers cannot decode with a KV"):
        generate(model, [[1, 2, 3]], max_new_tokens=4, temperature=0)
    with pytest.raises(CapabilityError, match="reversible=True") as info:
        model(torch.tensor([[1, 2]]), cache=tiny("gpt").new_cache())
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("make, message", [
    (lambda: GPTConfig(reversible=True, norm_first=False),
     r"reversible=True needs pre-norm layers \(norm_first=True\)"),
    (lambda: EncoderConfig(reversible="yes"), "reversible must be bool, got 'yes'"),
    (lambda: GPTConfig(ff_chunks=-1), r"ff_chunks must be an integer >= 0 \(0 = off\), got -1"),
    (lambda: GPTConfig(ff_chunks=2.5), "ff_chunks must be int, got 2.5"),
    (lambda: GPTConfig(ff_chunks=True), "ff_chunks must be int, got True"),
    (lambda: Seq2SeqConfig(reversible=True), "reversible=True is not available for an "
                                             "encoder-decoder"),
    (lambda: Seq2SeqConfig(reversible=True, norm_first=True), "decoder's cross-attention"),
    (lambda: TransformerStack(GPTConfig(reversible=True), 2, cross=True),
     "reversible=True cannot make decoder layers with cross-attention reversible"),
])
def test_bad_combinations_are_one_line_config_errors(make, message):
    with pytest.raises(ConfigError, match=message) as info:
        make()
    assert "\n" not in str(info.value)


def test_encoder_decoder_takes_ff_chunks_in_both_stacks():
    cfg = dict(vocab_size=V, d_model=D, n_heads=4, n_layers=2, d_ff=D_FF)
    torch.manual_seed(0)
    plain = EncoderDecoder(Seq2SeqConfig(**cfg)).double().eval()
    chunked = EncoderDecoder(Seq2SeqConfig(**cfg, ff_chunks=3)).double().eval()
    chunked.load_state_dict({k.replace(".ffn.", ".ffn.ffn."): v
                             for k, v in plain.state_dict().items()})
    src, tgt = torch.randint(V, (2, 9)), torch.randint(V, (2, 7))
    assert all(type(b.ffn).__name__ == "ChunkedFeedForward"
               for stack in (chunked.encoder, chunked.decoder) for b in stack.blocks)
    assert torch.allclose(chunked(src, tgt), plain(src, tgt), atol=1e-12)
