"""Folder and tokenizer details the other interop tests leave open: which eos ids win when a
folder names two sets, the last/ fallback of a run directory without best/, a chat folder's
max_length, and truncation that must not outlive the batch that asked for it."""

import json

import torch
from tokenizers import Tokenizer
from transformers import GenerationConfig

from attnlab.interop import HFTokenizer, load_hf_folder, load_pretrained, save_attnlab_folder
from tests.interop.test_folders import hf_folder, wordpiece_json
from tests.interop.tiny import gpt2_shaped, hf_gpt2


def test_generation_config_eos_wins_over_config_json_as_in_transformers(tmp_path):
    folder = hf_folder(tmp_path, hf_gpt2(), wordpiece_json(padding=False))
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "eos_token_id": 7}))
    path = folder / "generation_config.json"
    gen = json.loads(path.read_text()) if path.is_file() else {}
    (folder / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [5, 9]}))
    want = GenerationConfig.from_pretrained(folder).eos_token_id  # what generate stops at
    _, tokenizer = load_hf_folder(folder)
    assert list(tokenizer.eos_ids) == want == [5, 9]


def test_a_run_without_best_loads_its_last_weights(tmp_path):
    model = gpt2_shaped()
    run = tmp_path / "run"
    save_attnlab_folder(model, run)
    (run / "best").rename(run / "last")
    loaded, _ = load_pretrained(run)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


def test_a_chat_template_keeps_the_sentence_transformers_max_length(tmp_path):
    folder = hf_folder(tmp_path, hf_gpt2(), wordpiece_json(padding=False))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 6}))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": "{% for m in messages %}{{ m['content'] }}{% endfor %}"}))
    _, tokenizer = load_hf_folder(folder)
    assert tokenizer.chat is not None and tokenizer.max_length == 6
    ids, _, _ = tokenizer.batch(["the cat sat on the mat and ran fast"])
    assert ids.shape == (1, 6)


def test_batch_truncation_does_not_leak_into_later_encodes():
    tok = HFTokenizer(Tokenizer.from_str(wordpiece_json(padding=False)))
    text = "the cat sat on the mat and the dog ran fast"
    whole = tok.encode(text)
    assert len(whole) > 5
    ids, _, _ = tok.batch([text, "a cat"], max_length=5)
    assert ids.shape == (2, 5) and ids[0].tolist() == [*whole[:4], whole[-1]]
    assert tok.encode(text) == whole
    assert tok.encode_batch([text]) == [whole]
    ids, _, _ = tok.batch([text])  # no max_length now: the whole text
    assert ids[0].tolist() == whole


def test_named_chat_templates_use_the_default_one_as_transformers_does(tmp_path):
    from transformers import PreTrainedTokenizerFast

    folder = hf_folder(tmp_path, hf_gpt2(), wordpiece_json(padding=False))
    # block tags on lines of their own: transformers' Jinja drops the newline after each tag
    default = ("{% for m in messages %}\n  <{{ m['role'] }}>{{ m['content'] }}\n"
               "{% endfor %}\n{% if add_generation_prompt %}\n<assistant>\n{% endif %}\n")
    tools = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"chat_template": [{"name": "tool_use", "template": tools},
                           {"name": "default", "template": default}], "eos_token": "[SEP]"}))
    _, tokenizer = load_hf_folder(folder)
    messages = [{"role": "user", "content": "hi"}]
    theirs = PreTrainedTokenizerFast.from_pretrained(folder)
    ours = tokenizer.chat_prompt(messages)
    assert ours == theirs.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=True)
    assert ours.strip().startswith("<user>hi") and "\n\n" not in ours
