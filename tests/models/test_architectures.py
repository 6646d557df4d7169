import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from attnlab.attention import available
from attnlab.errors import AttnlabError, ConfigError
from attnlab.layers import POSITIONAL
from attnlab.models import (
    GPT,
    Encoder,
    EncoderConfig,
    EncoderDecoder,
    GPTConfig,
    Seq2SeqConfig,
)
from tests.conftest import TINY_OPTIONS


def copy_mha(ours, ref):
    d = ours.d_model
    for proj, w, b in zip((ours.q_proj, ours.k_proj, ours.v_proj), ref.in_proj_weight.split(d),
                          ref.in_proj_bias.split(d), strict=True):
        proj.weight.copy_(w)
        proj.bias.copy_(b)
    ours.out_proj.load_state_dict(ref.out_proj.state_dict())


def copy_layer(block, layer):
    """torch.nn.TransformerEncoderLayer / DecoderLayer -> attnlab Block."""
    copy_mha(block.self_attn, layer.self_attn)
    block.attn_norm.load_state_dict(layer.norm1.state_dict())
    if block.cross_attn is not None:
        copy_mha(block.cross_attn, layer.multihead_attn)
        block.cross_norm.load_state_dict(layer.norm2.state_dict())
        block.ffn_norm.load_state_dict(layer.norm3.state_dict())
    else:
        block.ffn_norm.load_state_dict(layer.norm2.state_dict())
    block.ffn.fc1.load_state_dict(layer.linear1.state_dict())
    block.ffn.fc2.load_state_dict(layer.linear2.state_dict())


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [False, True])
def test_encoder_decoder_equals_torch_transformer(norm_first):
    d, H, ff, V = 32, 4, 64, 50
    ref = nn.Transformer(d, H, num_encoder_layers=2, num_decoder_layers=3, dim_feedforward=ff,
                         dropout=0.0, batch_first=True, norm_first=norm_first)
    ref.eval()
    cfg = Seq2SeqConfig(vocab_size=V, d_model=d, n_heads=H, n_layers=2, n_decoder_layers=3,
                        d_ff=ff, norm_first=norm_first, final_norm=True)
    model = EncoderDecoder(cfg).eval()
    with torch.no_grad():
        for block, layer in zip(model.encoder.blocks, ref.encoder.layers, strict=True):
            copy_layer(block, layer)
        for block, layer in zip(model.decoder.blocks, ref.decoder.layers, strict=True):
            copy_layer(block, layer)
        model.encoder.norm.load_state_dict(ref.encoder.norm.state_dict())
        model.decoder.norm.load_state_dict(ref.decoder.norm.state_dict())

    src, tgt = torch.randint(V, (3, 9)), torch.randint(V, (3, 7))
    src_keep = torch.ones(3, 9, dtype=torch.bool)
    src_keep[1, 6:] = False
    tgt_keep = torch.ones(3, 7, dtype=torch.bool)
    tgt_keep[2, 5:] = False
    expected = ref(model.embed_source(src), model.embed_target(tgt),
                   tgt_mask=torch.ones(7, 7, dtype=torch.bool).triu(1),
                   src_key_padding_mask=~src_keep, tgt_key_padding_mask=~tgt_keep,
                   memory_key_padding_mask=~src_keep, tgt_is_causal=True)
    ours = model.forward_features(src, tgt, src_key_padding_mask=src_keep,
                                  tgt_key_padding_mask=tgt_keep)
    assert torch.allclose(ours, expected, atol=1e-5), (ours - expected).abs().max()


def test_post_norm_paper_layer_has_no_final_norm_by_default():
    model = EncoderDecoder(Seq2SeqConfig(d_model=16, n_heads=2))
    assert isinstance(model.encoder.norm, nn.Identity) and not model.config.norm_first
    assert isinstance(EncoderDecoder(Seq2SeqConfig(d_model=16, n_heads=2, norm_first=True))
                      .encoder.norm, nn.LayerNorm)


def test_encoder_equals_torch_transformer_encoder_with_padding():
    d, H, V = 32, 4, 40
    layer = nn.TransformerEncoderLayer(d, H, 64, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    ref = nn.TransformerEncoder(layer, 2, norm=nn.LayerNorm(d), enable_nested_tensor=False).eval()
    model = Encoder(EncoderConfig(vocab_size=V, d_model=d, n_heads=H, n_layers=2, d_ff=64,
                                  pooling="mean")).eval()
    with torch.no_grad():
        for block, lyr in zip(model.stack.blocks, ref.layers, strict=True):
            copy_layer(block, lyr)
        model.stack.norm.load_state_dict(ref.norm.state_dict())
    idx = torch.randint(V, (2, 8))
    keep = torch.tensor([[True] * 8, [True] * 5 + [False] * 3])
    x = model.positional.embed(model.tok_emb(idx))
    expected = ref(x, src_key_padding_mask=~keep)
    h = model.forward_features(idx, key_padding_mask=keep)
    assert torch.allclose(h[keep], expected[keep], atol=1e-5)
    pooled = model.forward_head(h, key_padding_mask=keep)
    assert torch.allclose(pooled[1], expected[1, :5].mean(0), atol=1e-5)


def tiny(kind, **kw):
    base = dict(vocab_size=31, d_model=32, n_heads=4, n_layers=2, max_len=64)
    base.update(kw)
    if kind == "gpt":
        return GPT(GPTConfig(**base)).eval()
    if kind == "encoder":
        return Encoder(EncoderConfig(**base)).eval()
    return EncoderDecoder(Seq2SeqConfig(**base)).eval()


def test_uniform_api_features_then_head():
    idx = torch.randint(31, (2, 10))
    gpt = tiny("gpt")
    h = gpt.forward_features(idx)
    assert h.shape == (2, 10, 32)
    assert torch.equal(gpt(idx), gpt.forward_head(h))
    enc = tiny("encoder")
    h = enc.forward_features(idx)
    assert enc.forward_head(h).shape == (2, 32)  # no classifier: pooled features
    assert enc.reset_head(5) is enc  # a task adds one layer; chainable, as train() is
    assert isinstance(enc.head, nn.Linear) and enc(idx).shape == (2, 5)
    assert torch.equal(enc(idx), enc.head(enc.forward_head(h, pre_logits=True)))
    s2s = tiny("seq2seq")
    h = s2s.forward_features(idx, idx[:, :4])
    assert torch.equal(s2s(idx, idx[:, :4]), s2s.forward_head(h))


def test_tied_embeddings_share_one_tensor_and_count_once():
    gpt = tiny("gpt")
    assert gpt.head.weight is gpt.tok_emb.weight
    untied = tiny("gpt", tie_embeddings=False)
    assert untied.num_parameters() - gpt.num_parameters() == 31 * 32
    unique = {id(p): p.numel() for p in gpt.parameters()}
    assert gpt.num_parameters() == sum(unique.values())


@pytest.mark.parametrize("kind", ["gpt", "encoder", "seq2seq"])
@pytest.mark.parametrize("attention", ["full", "local"])
def test_flops_estimate_matches_torch_flop_counter(kind, attention):
    T = 32
    # torch's counter does not see the CPU flash kernel, so count the eager twins (same math)
    opts = {"window": 8, "impl": "eager"} if attention == "local" else {"impl": "eager"}
    extra = {"num_classes": 3} if kind == "encoder" else {}
    model = tiny(kind, attention=attention, attention_options=opts, **extra)
    if kind == "seq2seq":
        for block in model.decoder.blocks:
            block.cross_attn.attn.impl = "eager"
    idx = torch.randint(31, (1, T))
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(idx) if kind != "seq2seq" else model(idx, idx)
    measured = counter.get_total_flops()
    estimate = model.flops_per_token(T) * T
    assert abs(estimate - measured) / measured < 0.02, (estimate, measured)


@pytest.mark.parametrize("name, positional", [
    (n, p) for n, c in available().items() if c.kv_cache and c.causal
    for p in POSITIONAL if p != "alibi" or c.bias])
def test_gpt_kv_cached_decoding_equals_full_forward(name, positional):
    model = tiny("gpt", attention=name, attention_options=TINY_OPTIONS[name],
                 positional=positional, n_kv_heads=2)
    idx = torch.randint(31, (2, 12))
    full = model(idx)
    cache = model.new_cache()
    steps = [model(idx[:, :5], cache=cache)]
    steps += [model(idx[:, t:t + 1], cache=cache) for t in range(5, 12)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_gpt_compiles_into_one_graph():
    """The eager input checks stay out of a torch.compile graph (no graph break, no warning)."""
    gpt = tiny("gpt")
    explained = torch._dynamo.explain(gpt)(torch.randint(31, (2, 10)))
    assert explained.graph_break_count == 0, explained.break_reasons


@pytest.mark.parametrize("positional", POSITIONAL)
def test_seq2seq_cached_decoding_equals_full_forward(positional):
    model = tiny("seq2seq", positional=positional)
    src, tgt = torch.randint(31, (2, 9)), torch.randint(31, (2, 6))
    keep = torch.ones(2, 9, dtype=torch.bool)
    keep[0, 7:] = False
    full = model(src, tgt, src_key_padding_mask=keep)
    memory = model.encode(src, src_key_padding_mask=keep)
    cache = model.new_cache()
    steps = [model.forward_head(model.decode(tgt[:, t:t + 1], memory, cache=cache,
                                             memory_key_padding_mask=keep)) for t in range(6)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@pytest.mark.parametrize("name", [n for n, c in available().items() if c.permutation_equivariant])
def test_encoder_without_positions_is_permutation_equivariant(name):
    model = tiny("encoder", positional="none", attention=name)
    idx = torch.randint(31, (2, 10))
    perm = torch.randperm(10)
    h = model.forward_features(idx)
    assert torch.allclose(model.forward_features(idx[:, perm]), h[:, perm], atol=1e-5)
    with_pos = tiny("encoder", positional="sinusoidal", attention=name)
    h = with_pos.forward_features(idx)
    assert not torch.allclose(with_pos.forward_features(idx[:, perm]), h[:, perm], atol=1e-3)


CAUSAL = sorted(n for n, c in available().items() if c.causal)
NON_CAUSAL = sorted(n for n, c in available().items() if not c.causal)


@pytest.mark.parametrize("kind, name", [("encoder", n) for n in sorted(available())]
                         + [(k, n) for k in ("gpt", "seq2seq") for n in CAUSAL])
def test_every_architecture_trains_with_every_mechanism(kind, name):
    """One optimizer step lowers the loss on a fixed batch: gradients reach every parameter."""
    model = tiny(kind, attention=name, attention_options=TINY_OPTIONS[name]).train()
    if kind == "encoder":
        model.reset_head(3)
    idx = torch.randint(31, (4, 12))

    def loss_fn():
        if kind == "gpt":
            return nn.functional.cross_entropy(model(idx[:, :-1]).flatten(0, 1),
                                               idx[:, 1:].flatten())
        if kind == "encoder":
            return nn.functional.cross_entropy(model(idx), idx[:, 0] % 3)
        return nn.functional.cross_entropy(model(idx, idx[:, :-1]).flatten(0, 1),
                                           idx[:, 1:].flatten())

    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    before = loss_fn()
    before.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not unused, unused
    opt.step()
    assert loss_fn() < before


@pytest.mark.parametrize("kwargs, message", [
    (dict(d_model=30, n_heads=4), "d_model 30 is not divisible by n_heads 4"),
    (dict(attention="lokal"), "did you mean 'local'"),
    (dict(positional="sinusoid"), "did you mean 'sinusoidal'"),
    (dict(attention="local", attention_options={"window": 0}), "window must be an integer"),
    (dict(attention="local", attention_options={"windo": 4}), "did you mean 'window'"),
    (dict(n_heads=4, n_kv_heads=3), "n_kv_heads 3 must divide n_heads 4"),
    (dict(activation="swish"), "unknown activation 'swish'"),
    (dict(norm="batchnorm"), "unknown norm"),
    (dict(n_layers=0), "n_layers must be an integer >= 1"),
    (dict(dropout=1.0), "dropout must be in"),
    (dict(positional="rope", d_model=12, n_heads=4), "even head dimension"),
])
def test_invalid_configs_are_one_line_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message) as info:
        GPT(GPTConfig(**kwargs))
    assert "\n" not in str(info.value)


def test_from_dict_rejects_unknown_keys_with_suggestion():
    with pytest.raises(ConfigError, match=r"unknown GPTConfig key 'n_layer'.*'n_layers'"):
        GPTConfig.from_dict({"n_layer": 2})
    assert GPTConfig.from_dict({"n_layers": 3}).n_layers == 3


def test_runtime_input_errors_are_attnlab_errors():
    gpt = tiny("gpt", positional="learned", max_len=8)
    with pytest.raises(AttnlabError, match="max_len 8"):
        gpt(torch.randint(31, (1, 9)))
    with pytest.raises(AttnlabError, match=r"must lie in \[0, 31\)"):
        gpt(torch.tensor([[3, 31]]))
    with pytest.raises(AttnlabError, match="integer tensor"):
        gpt(torch.randn(1, 4))
    with pytest.raises(ConfigError, match="share_embeddings needs"):
        Seq2SeqConfig(tgt_vocab_size=10, vocab_size=20)


@pytest.mark.parametrize("positional", POSITIONAL)
def test_left_padded_rows_with_their_positions_equal_unpadded_rows(positional):
    """Batched prompts of different lengths: left padding + per-row positions change nothing."""
    model = tiny("gpt", positional=positional)
    a, b = torch.randint(31, (1, 7)), torch.randint(31, (1, 4))
    pad = 3
    batch = torch.cat([a, torch.cat([torch.zeros(1, pad, dtype=torch.long), b], 1)])
    keep = torch.ones(2, 7, dtype=torch.bool)
    keep[1, :pad] = False
    positions = (keep.cumsum(1) - 1).clamp(min=0)
    out = model(batch, key_padding_mask=keep, positions=positions)
    assert torch.allclose(out[0], model(a)[0], atol=1e-5)
    assert torch.allclose(out[1, pad:], model(b)[0], atol=1e-5)
    cache = model.new_cache()  # and it continues token by token from a cache
    model(batch, key_padding_mask=keep, positions=positions, cache=cache)
    nxt = torch.randint(31, (2, 1))
    step = model(nxt, positions=positions[:, -1:] + 1, cache=cache)
    assert torch.allclose(step[1], model(torch.cat([b, nxt[1:]], 1))[0, -1:], atol=1e-5)


@pytest.mark.parametrize("name", NON_CAUSAL)
def test_decoders_refuse_non_causal_mechanisms_at_config_time(name):
    with pytest.raises(ConfigError, match=f"attention '{name}' is not causal"):
        GPTConfig(attention=name, attention_options=TINY_OPTIONS[name])
    with pytest.raises(ConfigError, match="decoder of an encoder-decoder"):
        Seq2SeqConfig(attention=name, attention_options=TINY_OPTIONS[name])


@pytest.mark.parametrize("name", sorted(n for n, c in available().items() if not c.bias))
def test_alibi_with_a_mechanism_that_takes_no_bias_is_a_config_error(name):
    with pytest.raises(ConfigError, match=f"attention '{name}' cannot take"):
        EncoderConfig(attention=name, attention_options=TINY_OPTIONS[name], positional="alibi")
