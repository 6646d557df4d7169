"""Model folders: Hugging Face folders as `transformers` writes them, attnlab run directories,
`attnlab convert` between them, and bad folders as one clear line."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import GPT2LMHeadModel, GPT2Model, PreTrainedTokenizerFast

from attnlab.cli import main
from attnlab.data import BPETokenizer, CharTokenizer
from attnlab.errors import AttnlabError
from attnlab.generate import generate_text
from attnlab.interop import (
    HFTokenizer,
    load_attnlab_folder,
    load_hf_folder,
    load_pretrained,
    save_attnlab_folder,
)
from attnlab.models import GPT, Encoder
from attnlab.tasks.run import load_run
from tests.interop.tiny import ATOL, RTOL, V, gpt2_shaped, hf_bert, hf_gpt2, hf_llama, padded

WORDS = ["the", "a", "an", "cat", "dog", "sat", "on", "mat", "and", "ran", "fast", "slow", "big",
         "small", "red", "blue", "green", "house", "tree", "bird", "sings", "today", "tomorrow",
         "yesterday", "hello", "world", "attention", "is", "all", "you", "need", "##s", "##ed",
         "##ing", ",", ".", "!", "?"]


def wordpiece_json(padding: bool = True) -> str:
    """A BERT-style WordPiece tokenizer.json over V tokens: lowercasing, [CLS] A [SEP]."""
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = special + WORDS
    vocab += [f"[unused{i}]" for i in range(V - len(vocab))]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    tok.add_special_tokens(special)
    if padding:  # as all-MiniLM-L6-v2's file: every text padded to a fixed length
        tok.enable_padding(pad_id=0, pad_token="[PAD]", length=16)
        tok.enable_truncation(16)
    return tok.to_str()


@pytest.fixture(scope="module")
def bpe():
    text = "hello world, the cat sat on the mat. attention is all you need!\n" * 20
    return BPETokenizer.train(text, vocab_size=300)


def hf_folder(tmp_path, hf, tokenizer_json=None, **save):
    folder = tmp_path / "hf"
    hf.save_pretrained(folder, **save)
    if tokenizer_json is not None:
        (folder / "tokenizer.json").write_text(tokenizer_json)
    return folder


def run(*args):
    return main([str(a) for a in args])


# ---------------------------------------------------------------------------------------------
# Loading Hugging Face folders


@pytest.mark.parametrize("make", [hf_gpt2, lambda: hf_gpt2(tie=False), hf_llama,
                                  lambda: hf_llama(tie=True), hf_bert],
                         ids=["gpt2", "gpt2-untied", "llama", "llama-tied", "bert"])
def test_folders_saved_by_transformers_load_with_equal_outputs(make, tmp_path):
    hf = make()
    folder = hf_folder(tmp_path, hf)
    model, tokenizer = load_hf_folder(folder)
    assert tokenizer is None and not model.training
    idx, keep = padded([12, 7], 12, seed=1)
    with torch.no_grad():
        if isinstance(model, GPT):
            ours, theirs = model(idx, key_padding_mask=keep), hf(idx, attention_mask=keep).logits
        else:
            ours = model.forward_features(idx, key_padding_mask=keep)
            theirs = hf(idx, attention_mask=keep.long()).last_hidden_state
    for b, n in enumerate([12, 7]):
        torch.testing.assert_close(ours[b, :n], theirs[b, :n], atol=ATOL, rtol=RTOL)


def test_sharded_checkpoint_loads(tmp_path):
    hf = hf_llama()
    folder = hf_folder(tmp_path, hf, max_shard_size="100KB")
    assert (folder / "model.safetensors.index.json").is_file()
    assert not (folder / "model.safetensors").exists()
    model, _ = load_hf_folder(folder)
    idx = torch.randint(V, (2, 9), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=ATOL, rtol=RTOL)


def test_a_gpt2_base_model_without_prefix_or_head_loads_tied(tmp_path):
    """GPT2Model files (like the original gpt2 checkpoint) name tensors without `transformer.`"""
    lm = hf_gpt2()
    base = GPT2Model(lm.config)
    base.load_state_dict(lm.transformer.state_dict())
    folder = hf_folder(tmp_path, base)
    model, _ = load_hf_folder(folder)
    idx = torch.randint(V, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), lm(idx).logits, atol=ATOL, rtol=RTOL)


def test_bert_folder_tokenizer_pads_and_truncates_as_transformers(tmp_path):
    folder = hf_folder(tmp_path, hf_bert(), wordpiece_json())
    (folder / "sentence_bert_config.json").write_text('{"max_seq_length": 8}')
    model, tok = load_hf_folder(folder)
    assert isinstance(model, Encoder) and isinstance(tok, HFTokenizer)
    assert tok.max_length == 8 and tok.vocab_size == V
    pieces = ["[CLS]", "the", "cat", "##s", "sat", "[SEP]"]
    assert tok.encode("The cats sat") == [tok.hf.token_to_id(t) for t in pieces]
    assert tok.decode(tok.encode("The cats sat")) == "[CLS] the cats sat [SEP]"
    texts = ["The cat sat on the mat.", "Howdy!", "big red dogs ran fast and slow today"]
    ids, mask, types = tok.batch(texts)
    reference = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                        pad_token="[PAD]")
    theirs = reference(texts, padding=True, truncation=True, max_length=8,
                       return_token_type_ids=True, return_tensors="pt")
    assert torch.equal(ids, theirs["input_ids"])
    assert torch.equal(mask, theirs["attention_mask"].bool())
    assert torch.equal(types, theirs["token_type_ids"])
    assert ids.shape == (3, 8) and ids[2, -1] == 3  # truncated, and [SEP] is kept
    howdy = [tok.hf.token_to_id(t) for t in ["[CLS]", "[UNK]", "!", "[SEP]", "[PAD]"]]
    assert ids[1].tolist()[:5] == howdy and not mask[1, 4:].any()


# ---------------------------------------------------------------------------------------------
# attnlab convert, both directions


def test_convert_hf_to_attnlab_gives_a_run_that_generate_reads(tmp_path, bpe, capsys):
    hf = hf_gpt2(vocab=bpe.vocab_size)
    src = hf_folder(tmp_path, hf, bpe.to_json())
    out = tmp_path / "run"
    assert run("convert", src, "--out", out) == 0
    said = capsys.readouterr().out
    assert "attnlab run directory" in said and "best/model.safetensors" in said
    assert json.loads((out / "config.json").read_text())["task"] == "lm"
    model, tokenizer, _ = load_run(out)  # what `attnlab generate` and `eval` use
    assert tokenizer.encode("the cat") == bpe.encode("the cat")
    idx = torch.tensor([bpe.encode("hello world, the cat")])
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hf(idx).logits, atol=ATOL, rtol=RTOL)
    assert run("generate", out, "--prompt", "the cat", "--temperature", "0",
               "--max-new-tokens", "4", "--no-stream") == 0
    assert capsys.readouterr().out.startswith("the cat")
    assert run("generate", out, "--prompt", "the cat", "--beam", "2") == 2
    assert "--beam is for translation / summarization runs" in capsys.readouterr().err


@pytest.mark.parametrize("where", ["generation_config.json", "config.json"])
def test_generate_stops_at_the_models_eos_as_hf_generate_does(tmp_path, bpe, capsys, where):
    """GPT-2 would otherwise run straight past <|endoftext|>."""
    hf = hf_gpt2(vocab=bpe.vocab_size).eval()
    prompt = bpe.encode("the cat")
    with torch.no_grad():
        free = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                           eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    eos = free[3]  # the 4th greedy token ends the answer; a list: any of them does
    src = hf_folder(tmp_path, hf, bpe.to_json())
    for name in ("generation_config.json", "config.json"):
        path = src / name
        if path.is_file():
            cfg = json.loads(path.read_text())
            cfg["eos_token_id"] = [eos, bpe.vocab_size - 1] if name == where else None
            path.write_text(json.dumps(cfg))
    with torch.no_grad():
        theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False,
                             eos_token_id=[eos, bpe.vocab_size - 1], pad_token_id=0)
    answer = theirs[0, len(prompt):].tolist()
    assert answer[-1] == eos and len(answer) == free.index(eos) + 1
    capsys.readouterr()
    assert run("generate", src, "--prompt", "the cat", "--temperature", "0",
               "--max-new-tokens", "12", "--no-stream") == 0
    assert capsys.readouterr().out == "the cat" + bpe.decode(answer[:-1]) + "\n"


def test_convert_round_trip_gives_back_equal_tensors_and_tokenizer(tmp_path, bpe):
    hf = hf_gpt2(vocab=bpe.vocab_size, tie=False)
    src = hf_folder(tmp_path, hf, bpe.to_json())
    assert run("convert", src, "--out", tmp_path / "run", "--to", "attnlab") == 0
    assert run("convert", tmp_path / "run", "--out", tmp_path / "back", "--to", "hf") == 0
    before, after = load_file(src / "model.safetensors"), load_file(
        tmp_path / "back" / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert (tmp_path / "back" / "tokenizer.json").read_bytes() == bpe.to_json().encode()
    again = GPT2LMHeadModel.from_pretrained(tmp_path / "back",
                                            attn_implementation="eager").eval()
    idx = torch.randint(bpe.vocab_size, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():  # not bit-equal: the export names the tanh GELU attnlab computes
        torch.testing.assert_close(again(idx).logits, hf(idx).logits, atol=ATOL, rtol=RTOL)
    assert again.config.activation_function == "gelu_pytorch_tanh"  # was gelu_new


def test_convert_bert_keeps_its_wordpiece_tokenizer(tmp_path):
    hf = hf_bert()
    src = hf_folder(tmp_path, hf, wordpiece_json())
    assert run("convert", src, "--out", tmp_path / "run") == 0
    model, tok = load_pretrained(tmp_path / "run")
    assert isinstance(model, Encoder) and isinstance(tok, HFTokenizer)
    ids, mask, _ = tok.batch(["the big dog", "a cat"])
    with torch.no_grad():
        h = model.forward_features(ids, key_padding_mask=mask)
        theirs = hf(ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(h[mask], theirs[mask], atol=ATOL, rtol=RTOL)


def test_convert_run_with_char_tokenizer_round_trips_through_hf(tmp_path):
    char = CharTokenizer.train("hello world")
    model = gpt2_shaped(vocab_size=char.vocab_size)
    save_attnlab_folder(model, tmp_path / "run", tokenizer=char)
    loaded, tok = load_attnlab_folder(tmp_path / "run")
    assert isinstance(tok, CharTokenizer)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                 model.state_dict().values(), strict=True))
    assert run("convert", tmp_path / "run", "--out", tmp_path / "hf") == 0
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json"]
    text = "hello wörld 😀"  # ö and the emoji are outside the vocabulary: byte fallback
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "hf" / "tokenizer.json"))
    assert theirs.encode(text) == char.encode(text)
    assert theirs.decode(char.encode(text)) == text
    # ... and back: the run generates with the HF form what it generated with its own
    assert run("convert", tmp_path / "hf", "--out", tmp_path / "back") == 0
    back_model, back_tok = load_attnlab_folder(tmp_path / "back")
    assert isinstance(back_tok, HFTokenizer) and back_tok.encode(text) == char.encode(text)
    kw = dict(max_new_tokens=12, temperature=0)
    assert (generate_text(back_model, back_tok, "hello", **kw)
            == generate_text(model, char, "hello", **kw))
    # as a run directory too (what `attnlab generate` and `eval` read): a byte-fallback BPE
    # gives back any text, so it is accepted beside byte-level ones
    from attnlab.tasks.run import load_run

    run_model, run_tok, _ = load_run(tmp_path / "back")
    assert run_tok.decode(run_tok.encode(text)) == text
    assert (generate_text(run_model, run_tok, "hello", **kw)
            == generate_text(model, char, "hello", **kw))


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit status 2, nothing of the user's touched


def expect_error(capsys, args, message):
    capsys.readouterr()  # drop what setting up printed (transformers' progress bars)
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnlab: error: "), err
    assert message in err, err


def test_a_non_empty_out_is_refused_and_left_alone(tmp_path, capsys):
    src = hf_folder(tmp_path, hf_gpt2())
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    expect_error(capsys, ["convert", src, "--out", out], "exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["mine.txt"]
    assert (out / "mine.txt").read_text() == "precious"
    empty_file = tmp_path / "empty-file"
    empty_file.write_text("")
    expect_error(capsys, ["convert", src, "--out", empty_file], "empty-file is a file")
    assert empty_file.read_text() == ""
    (out / "mine.txt").unlink()  # an empty folder is fine
    assert run("convert", src, "--out", out) == 0


def test_direction_mismatch_is_refused(tmp_path, capsys):
    src = hf_folder(tmp_path, hf_gpt2())
    expect_error(capsys, ["convert", src, "--out", tmp_path / "o", "--to", "hf"],
                 "is a Hugging Face folder, so it converts to attnlab, not hf")


def broken(tmp_path, what):
    """An HF folder with one thing wrong."""
    hf = hf_gpt2()
    folder = hf_folder(tmp_path, hf)
    weights = folder / "model.safetensors"
    if what == "corrupt":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif what == "pickle-only":
        weights.rename(folder / "pytorch_model.bin")
    elif what == "missing-tensor":
        tensors = load_file(weights)
        tensors.pop("transformer.h.1.mlp.c_fc.weight")
        from safetensors.torch import save_file
        save_file(tensors, weights, metadata={"format": "pt"})
    elif what == "unsupported":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "t5"}))
    elif what == "bad-json":
        (folder / "config.json").write_text("{not json")
    elif what == "no-config":
        (folder / "config.json").unlink()
    return folder


@pytest.mark.parametrize(("what", "message"), [
    ("corrupt", "is not a readable safetensors file"),
    ("pickle-only", "only as a pickle (pytorch_model.bin), which attnlab never loads"),
    ("missing-tensor", "the checkpoint has no tensor 'transformer.h.1.mlp.c_fc.weight'"),
    ("unsupported", "model_type 't5' is not supported; supported: gpt2, llama, bert"),
    ("bad-json", "config.json is not readable JSON"),
    ("no-config", "has no config.json: it is neither a Hugging Face model folder nor"),
])
def test_bad_folders_are_one_line_and_write_nothing(tmp_path, capsys, what, message):
    src = broken(tmp_path, what)
    expect_error(capsys, ["convert", src, "--out", tmp_path / "out"], message)
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no temporary leftovers
    with pytest.raises(AttnlabError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_pretrained(src)


def test_missing_source_is_one_line(tmp_path, capsys):
    expect_error(capsys, ["convert", tmp_path / "nope", "--out", tmp_path / "o"],
                 "no such folder")


def test_load_pretrained_dispatches_on_what_it_is_given(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"GGUF")  # read as GGUF (tests/interop/test_gguf.py)
    with pytest.raises(AttnlabError, match=r"m\.gguf is not a readable GGUF file"):
        load_pretrained(tmp_path / "m.gguf")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(AttnlabError, match="is a file; give a model folder"):
        load_pretrained(tmp_path / "weights.safetensors")
    with pytest.raises(AttnlabError, match="did you mean 'all-MiniLM-L6-v2'"):
        load_pretrained("all-MiniLM-L6")
    src = hf_folder(tmp_path, hf_gpt2())
    with pytest.raises(AttnlabError, match="is a Hugging Face folder, not an attnlab run"):
        load_attnlab_folder(src)
    other = tmp_path / "vit-run"  # a run of a task whose model has no HF form here
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "image-classify", "model": {}}))
    with pytest.raises(AttnlabError, match=r"holds a run of task 'image-classify'; .* "
                                           r"load it with attnlab\.load_run"):
        load_pretrained(other)


def test_corrupt_tokenizer_file_is_one_line(tmp_path):
    folder = hf_folder(tmp_path, hf_bert(), "{\"model\": 3}")
    with pytest.raises(AttnlabError, match="is not a tokenizers JSON file"):
        load_hf_folder(folder)


def test_tokenizer_file_padding_is_switched_off_but_saved_back(tmp_path):
    text = wordpiece_json(padding=True)
    tok = HFTokenizer(Tokenizer.from_str(text), source=text)
    assert len(tok.encode("the cat")) == 4  # not padded to the file's 16
    ids, mask, _ = tok.batch(["the cat", "a"])
    assert ids.shape == (2, 4) and mask.sum().item() == 7
    tok.save(tmp_path / "tokenizer.json")
    assert (tmp_path / "tokenizer.json").read_text() == text


# A template that leans on what transformers gives templates: tojson as written (key order,
# no HTML escapes) and strftime_now.
TOOLS_TEMPLATE = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
                  "{{ {'b': 'é <tag> & x', 'a': [1, 2]} | tojson }}"
                  "{{ strftime_now('%Y') }}{% if add_generation_prompt %}<assistant>"
                  "{% endif %}")


def test_chat_template_jinja_files_and_template_helpers_equal_transformers(tmp_path, bpe):
    import datetime

    from transformers import PreTrainedTokenizerFast

    src = hf_folder(tmp_path, hf_gpt2(vocab=bpe.vocab_size), bpe.to_json())
    (src / "tokenizer_config.json").write_text(json.dumps({"eos_token": "!"}))
    (src / "chat_template.jinja").write_text(TOOLS_TEMPLATE)  # recent transformers save here
    _, tokenizer = load_pretrained(src)
    theirs = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"),
                                     chat_template=TOOLS_TEMPLATE)
    messages = [{"role": "user", "content": "hi <b>"}]
    ours = tokenizer.chat_prompt(messages)
    assert ours == theirs.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=True)
    assert '{"b": "é <tag> & x", "a": [1, 2]}' in ours and str(datetime.date.today().year) in ours
    assert tokenizer.chat.eos_token == "!"
    out = tmp_path / "run"  # convert keeps the template (in the run's tokenizer_config.json)
    assert run("convert", src, "--out", out) == 0
    assert load_pretrained(out)[1].chat_prompt(messages) == ours
