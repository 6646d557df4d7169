"""Export to the Hugging Face format: `transformers` loads what attnlab writes and computes the
same function; attnlab -> HF -> attnlab and HF -> attnlab -> HF give back equal tensors."""

import pytest
import torch
from transformers import BertModel, GPT2LMHeadModel, LlamaForCausalLM

from attnlab.errors import AttnlabError
from attnlab.generate import generate
from attnlab.interop import (
    encoder_from_hf,
    encoder_to_hf,
    gpt_from_hf,
    gpt_to_hf,
    model_from_hf,
    model_to_hf,
    save_hf_folder,
)
from tests.interop.tiny import (
    ATOL,
    RTOL,
    V,
    bert_shaped,
    gpt2_shaped,
    hf_bert,
    hf_gpt2,
    hf_llama,
    llama_shaped,
    padded,
)

HF_CLASS = {"gpt2": GPT2LMHeadModel, "llama": LlamaForCausalLM, "bert": BertModel}

GPTS = {
    "gpt2-tied": lambda: gpt2_shaped(),
    "gpt2-untied-gelu": lambda: gpt2_shaped(tie_embeddings=False, activation="gelu"),
    "gpt2-ffchunks": lambda: gpt2_shaped(ff_chunks=5, d_ff=80),
    "llama-gqa": lambda: llama_shaped(),
    "llama-tied-bias-mha": lambda: llama_shaped(tie_embeddings=True, bias=True, n_kv_heads=None),
}


def from_folder(model, folder):
    """What `transformers` makes of the folder attnlab writes, with its loading report."""
    save_hf_folder(model, folder)
    config, _ = model_to_hf(model)
    hf, info = HF_CLASS[config["model_type"]].from_pretrained(
        folder, output_loading_info=True, attn_implementation="eager")
    return hf.eval(), info


@pytest.mark.parametrize("name", GPTS)
def test_exported_gpt_loads_in_transformers_with_equal_logits(name, tmp_path):
    model = GPTS[name]()
    hf, info = from_folder(model, tmp_path / "hf")
    assert not any(info.values()), info  # no missing, unexpected or mismatched tensors
    idx, keep = padded([16, 11, 3], 16, seed=1)
    with torch.no_grad():
        ours = model(idx, key_padding_mask=keep)
        theirs = hf(idx, attention_mask=keep.long()).logits
    assert theirs.std() > 0.5
    for b, n in enumerate([16, 11, 3]):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_exported_encoder_loads_in_transformers_with_equal_states(pooling, tmp_path):
    model = bert_shaped(pooling=pooling)
    hf, info = from_folder(model, tmp_path / "hf")
    lengths = [14, 6]
    idx, keep = padded(lengths, 14, seed=2)
    types = ((torch.arange(14)[None, :] >= 4) & keep).long()
    with torch.no_grad():
        h = model.forward_features(idx, key_padding_mask=keep, token_type_ids=types)
        out = hf(idx, attention_mask=keep.long(), token_type_ids=types)
    for b, n in enumerate(lengths):
        torch.testing.assert_close(h[b, :n], out.last_hidden_state[b, :n], atol=ATOL, rtol=RTOL)
    if pooling == "cls":
        assert not any(info.values()), info
        with torch.no_grad():
            pooled = model.forward_head(h, key_padding_mask=keep, pre_logits=True)
        torch.testing.assert_close(pooled, out.pooler_output, atol=ATOL, rtol=RTOL)
    else:  # documented: no pooler is written, so HF makes up its own
        assert set(info["missing_keys"]) == {"pooler.dense.weight", "pooler.dense.bias"}


def test_encoder_without_token_types_exports_one_zero_type(tmp_path):
    model = bert_shaped(type_vocab_size=0)
    config, tensors = encoder_to_hf(model)
    assert config["type_vocab_size"] == 1
    assert torch.equal(tensors["embeddings.token_type_embeddings.weight"], torch.zeros(1, 64))
    hf, _ = from_folder(model, tmp_path / "hf")
    idx = torch.randint(V, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_features(idx), hf(idx).last_hidden_state,
                                   atol=ATOL, rtol=RTOL)


# ---------------------------------------------------------------------------------------------
# Round trips are exact


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", [*GPTS, "bert-cls", "bert-mean"])
def test_attnlab_to_hf_to_attnlab_is_exact(name):
    model = {"bert-cls": lambda: bert_shaped(), "bert-mean": lambda: bert_shaped(pooling="mean"),
             **GPTS}[name]()
    back = model_from_hf(*model_to_hf(model))
    assert type(back) is type(model)
    expected = dict(model.config.to_dict(), ff_chunks=0)  # a training option, not exported
    assert back.config.to_dict() == expected
    ours = {k.replace(".ffn.ffn.", ".ffn."): v for k, v in model.state_dict().items()}
    assert_same_tensors(back.state_dict(), ours)
    if model.config.to_dict().get("tie_embeddings"):
        assert back.head.weight is back.tok_emb.weight


@pytest.mark.parametrize("make", [hf_gpt2, lambda: hf_gpt2(tie=False, activation="gelu"),
                                  hf_llama, lambda: hf_llama(tie=True, bias=True, n_kv=4),
                                  hf_bert],
                         ids=["gpt2", "gpt2-untied", "llama", "llama-tied-bias", "bert"])
def test_hf_to_attnlab_to_hf_is_exact(make):
    hf = make()
    model = model_from_hf(hf.config.to_dict(), hf.state_dict())
    config, tensors = model_to_hf(model)
    reloaded = type(hf)(type(hf.config).from_dict(config))
    missing, unexpected = reloaded.load_state_dict(tensors, strict=False)
    assert not unexpected
    tied = hf.config.tie_word_embeddings and not isinstance(hf, BertModel)
    assert missing == (["lm_head.weight"] if tied else [])  # HF re-ties it itself
    theirs = {k: v for k, v in hf.state_dict().items() if k in tensors}
    assert len(theirs) == len(tensors)
    assert_same_tensors(tensors, theirs)


# ---------------------------------------------------------------------------------------------
# Greedy generation: transformers' generate on the exported model == attnlab's generate


def small_tied_embedding():
    """GPT-2 with a tied embedding at 0.1 scale: at unit scale each token's best successor is
    itself, and greedy decoding would only repeat the last prompt token."""
    model = gpt2_shaped()
    with torch.no_grad():
        model.tok_emb.weight.mul_(0.1)
    return model


@pytest.mark.parametrize("make", [small_tied_embedding, GPTS["gpt2-untied-gelu"],
                                  GPTS["llama-gqa"]], ids=["gpt2-tied", "gpt2-untied", "llama"])
def test_greedy_generation_matches_transformers(make, tmp_path):
    model = make()
    hf, _ = from_folder(model, tmp_path / "hf")
    prompts = [[5, 17, 3, 88, 42, 9], [60, 2, 71]]  # of different lengths: HF pads on the left
    new = 12
    ours = generate(model, prompts, max_new_tokens=new, temperature=0)
    T = max(map(len, prompts))
    ids = torch.tensor([[0] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = hf.generate(ids, attention_mask=mask, max_new_tokens=new, do_sample=False,
                          pad_token_id=0)
    theirs = out[:, T:].tolist()
    assert ours == theirs
    assert len({t for row in ours for t in row}) > 5  # decoding went somewhere


# ---------------------------------------------------------------------------------------------
# What cannot be exported is refused, before anything is written


@pytest.mark.parametrize(("make", "message"), [
    (lambda: gpt2_shaped(attention="local", attention_options={"window": 4}),
     "attention 'local' is not softmax attention over every key"),
    (lambda: gpt2_shaped(attention_options={"scale": 0.5}), "attention_options.scale is set"),
    (lambda: gpt2_shaped(reversible=True), "reversible=True layers"),
    (lambda: gpt2_shaped(positional="rope"), r"this GPT \(positional rope, norm layernorm"),
    (lambda: gpt2_shaped(n_kv_heads=2), "has no Hugging Face counterpart"),
    (lambda: llama_shaped(norm_first=False), "has no Hugging Face counterpart"),
    (lambda: bert_shaped(norm_first=True), r"this encoder \(norm_first=True.* is not BERT-shaped"),
    (lambda: bert_shaped(embed_norm=False), "is not BERT-shaped"),
    (lambda: bert_shaped(num_classes=3), r"classifier head \(3 classes\)"),
])
def test_unexportable_models_are_refused_and_nothing_is_written(make, message, tmp_path):
    with pytest.raises(AttnlabError, match=message):
        save_hf_folder(make(), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


def test_family_specific_functions_check_their_input():
    with pytest.raises(AttnlabError, match="model_type 't5' is not supported; supported: gpt2, "
                                           "llama, bert"):
        model_from_hf({"model_type": "t5"}, {})
    with pytest.raises(AttnlabError, match="encoder_to_hf needs an Encoder, got GPT"):
        encoder_to_hf(gpt2_shaped())
    with pytest.raises(AttnlabError, match="gpt_to_hf needs a GPT, got Encoder"):
        gpt_to_hf(bert_shaped())
    assert gpt_to_hf(gpt2_shaped())[0]["model_type"] == "gpt2"
    assert gpt_from_hf(*gpt_to_hf(llama_shaped())).config.positional == "rope"
    assert encoder_from_hf(*encoder_to_hf(bert_shaped())).config.embed_norm
