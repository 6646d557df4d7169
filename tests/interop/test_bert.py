"""attnlab's Encoder against Hugging Face BertModel on identical (random) weights."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

from attnlab.errors import AttnlabError
from attnlab.interop import encoder_from_hf, gpt_from_hf
from attnlab.models import Encoder, EncoderConfig
from tests.interop.tiny import ATOL, N_POS, RTOL, D, H, L, V, hf_bert, padded, scale_


def load(hf, **kw):
    return encoder_from_hf(hf.config.to_dict(), hf.state_dict(), **kw).eval()


@pytest.fixture(scope="module")
def bert():
    hf = hf_bert()
    return load(hf), hf


def test_config_maps_onto_a_post_norm_bert_encoder(bert):
    model, hf = bert
    assert model.config == EncoderConfig(
        vocab_size=V, d_model=D, n_heads=H, n_layers=L, d_ff=96, max_len=N_POS,
        positional="learned", activation="gelu", norm="layernorm", norm_eps=1e-3,
        norm_first=False, final_norm=False, bias=True, type_vocab_size=2, embed_norm=True,
        pooling="cls")
    assert model.num_parameters() == sum(p.numel() for p in hf.parameters())


def test_hidden_states_and_pooled_output_match(bert):
    model, hf = bert
    idx = torch.randint(V, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(idx)
        h = model.forward_features(idx)
        pooled = model.forward_head(h, pre_logits=True)
    assert theirs.last_hidden_state.std() > 0.5  # a scale at which a wrong part is visible
    torch.testing.assert_close(h, theirs.last_hidden_state, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(pooled, theirs.pooler_output, atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(model(idx), theirs.pooler_output, atol=ATOL, rtol=RTOL)


def test_padding_matches_attention_mask_and_each_row_alone(bert):
    model, hf = bert
    lengths = [20, 13, 4]
    idx, keep = padded(lengths, 20, seed=2)
    with torch.no_grad():
        theirs = hf(idx, attention_mask=keep.long())
        h = model.forward_features(idx, key_padding_mask=keep)
        pooled = model.forward_head(h, key_padding_mask=keep, pre_logits=True)
        alone = [hf(idx[b:b + 1, :n]).last_hidden_state[0] for b, n in enumerate(lengths)]
    for b, n in enumerate(lengths):  # padded positions are don't-care on both sides
        torch.testing.assert_close(h[b, :n], theirs.last_hidden_state[b, :n], atol=ATOL,
                                   rtol=RTOL)
        torch.testing.assert_close(h[b, :n], alone[b], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(pooled, theirs.pooler_output, atol=ATOL, rtol=RTOL)
    # the mask matters at this scale: without it the short rows come out different
    with torch.no_grad():
        unmasked = model.forward_features(idx)
    assert (unmasked[2, :4] - h[2, :4]).abs().max() > 1e-2


def test_token_types_of_a_sentence_pair_match(bert):
    model, hf = bert
    lengths = [18, 11]
    idx, keep = padded(lengths, 18, seed=3)
    types = ((torch.arange(18)[None, :] >= 6) & keep).long()  # segment B from position 6
    with torch.no_grad():
        theirs = hf(idx, attention_mask=keep.long(), token_type_ids=types).last_hidden_state
        ours = model.forward_features(idx, key_padding_mask=keep, token_type_ids=types)
        single = model.forward_features(idx, key_padding_mask=keep)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=ATOL, rtol=RTOL)
    assert (single[0] - ours[0]).abs().max() > 1e-2  # segment B really is embedded apart


@pytest.mark.parametrize("act", ["gelu", "gelu_new", "relu"])
def test_activation_is_read_from_the_config(act):
    hf = hf_bert(act=act)
    model = load(hf)
    assert model.config.activation == {"gelu": "gelu", "gelu_new": "gelu_tanh",
                                       "relu": "relu"}[act]
    idx = torch.randint(V, (2, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(idx), hf(idx).last_hidden_state,
                                   atol=ATOL, rtol=RTOL)


def test_without_pooler_weights_pooling_is_mean_over_real_tokens():
    hf = hf_bert(pooler=False)
    model = load(hf)
    assert model.config.pooling == "mean" and model.pooler.dense is None
    idx, keep = padded([9, 5], 9, seed=5)
    with torch.no_grad():
        h = hf(idx, attention_mask=keep.long()).last_hidden_state
        pooled = model(idx, key_padding_mask=keep)
    expected = torch.stack([h[0].mean(0), h[1, :5].mean(0)])
    torch.testing.assert_close(pooled, expected, atol=ATOL, rtol=RTOL)


def test_a_bert_for_masked_lm_checkpoint_loads_its_encoder():
    """BertFor* files keep the encoder under `bert.` and add task heads, which are ignored."""
    cfg = BertConfig(vocab_size=V, hidden_size=D, num_hidden_layers=L, num_attention_heads=H,
                     intermediate_size=96, max_position_embeddings=N_POS,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg._attn_implementation = "eager"
    hf = scale_(BertForMaskedLM(cfg)).eval()
    tensors = hf.state_dict()
    assert "bert.embeddings.word_embeddings.weight" in tensors
    model = encoder_from_hf(cfg.to_dict(), tensors).eval()
    assert model.config.pooling == "mean"  # BertForMaskedLM has no pooler
    idx = torch.randint(V, (2, 10), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(idx),
                                   hf.bert(idx).last_hidden_state, atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# The Encoder options themselves


def test_default_encoder_has_no_bert_extras():
    """Type embeddings and the embedding norm are opt-in: old checkpoints keep their names."""
    model = Encoder(EncoderConfig(vocab_size=11, d_model=16, n_heads=2, n_layers=1))
    assert model.type_emb is None
    assert not any(k.startswith(("type_emb", "embed_norm")) for k in model.state_dict())
    with pytest.raises(AttnlabError, match=r"no token-type embeddings \(type_vocab_size=0\)"):
        model(torch.zeros(1, 3, dtype=torch.long), token_type_ids=torch.zeros(1, 3).long())


def test_bad_token_type_ids_are_one_clear_line(bert):
    model, _ = bert
    idx = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(AttnlabError, match=r"token type ids must lie in \[0, 2\), got range"):
        model(idx, token_type_ids=torch.full((2, 5), 2))
    with pytest.raises(AttnlabError, match=r"token_type_ids have shape \(2, 4\), the token ids "
                                           r"\(2, 5\)"):
        model(idx, token_type_ids=torch.zeros(2, 4, dtype=torch.long))


def test_negative_type_vocab_size_is_refused():
    with pytest.raises(AttnlabError, match="type_vocab_size must be >= 0"):
        EncoderConfig(type_vocab_size=-1)


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize(("key", "value", "message"), [
    ("position_embedding_type", "relative_key",
     "position_embedding_type='relative_key' is not supported"),
    ("is_decoder", True, "is_decoder=True is not supported"),
    ("hidden_act", "quick_gelu", "activation 'quick_gelu' is not supported; supported: gelu"),
])
def test_unsupported_bert_settings_are_refused(bert, key, value, message):
    _, hf = bert
    with pytest.raises(AttnlabError, match=message):
        encoder_from_hf({**hf.config.to_dict(), key: value}, hf.state_dict())


def test_missing_and_misshaped_tensors_are_named(bert):
    _, hf = bert
    config, tensors = hf.config.to_dict(), hf.state_dict()
    name = "encoder.layer.1.attention.self.key.weight"
    with pytest.raises(AttnlabError, match=f"no tensor '{name}'"):
        encoder_from_hf(config, {k: v for k, v in tensors.items() if k != name})
    with pytest.raises(AttnlabError, match=r"'embeddings.token_type_embeddings.weight' has "
                                           r"shape \(3, 64\), the config implies \(2, 64\)"):
        encoder_from_hf(config, {**tensors,
                                 "embeddings.token_type_embeddings.weight": torch.zeros(3, D)})


def test_family_mixups_point_to_the_right_loader(bert):
    _, hf = bert
    with pytest.raises(AttnlabError, match=r"not a supported causal LM \(an encoder: use "
                                           r"encoder_from_hf\)"):
        gpt_from_hf(hf.config.to_dict(), hf.state_dict())
    with pytest.raises(AttnlabError, match="model_type 'gpt2' is not a supported encoder"):
        encoder_from_hf({"model_type": "gpt2"}, {})
    with pytest.raises(AttnlabError, match="the config has no 'hidden_size'"):
        encoder_from_hf({"model_type": "bert", "vocab_size": 5}, {})
