"""Export through interop/hf.py and interop/folder.py: the LLaMA export's
top-level rope_theta (what transformers 4 reads), BERT token-type counts on import, and
save_hf_folder's output: chat template, returned names, safetensors format tag, folder mode,
and the atomic rename (a failed write leaves nothing behind, a file that appears meanwhile is
never overwritten)."""

import json
import os
import stat

import pytest
import torch
from safetensors import safe_open

from attnlab.data import BPETokenizer
from attnlab.errors import AttnlabError
from attnlab.interop import (
    encoder_from_hf,
    encoder_to_hf,
    gpt_from_hf,
    gpt_to_hf,
    load_hf_folder,
    save_hf_folder,
)
from attnlab.interop import folder as folder_mod
from tests.interop.tiny import ATOL, RTOL, bert_shaped, gpt2_shaped, llama_shaped, padded


def test_llama_export_writes_rope_theta_where_each_transformers_version_reads_it():
    model = llama_shaped(rope_theta=1234.0)
    config, tensors = gpt_to_hf(model)
    assert config["rope_theta"] == 1234.0  # transformers 4 reads the top-level key
    assert config["rope_parameters"]["rope_theta"] == 1234.0  # transformers 5
    legacy = {k: v for k, v in config.items() if k != "rope_parameters"}
    again = gpt_from_hf(legacy, tensors).eval()
    assert again.config.rope_theta == 1234.0
    idx, _ = padded([12], 12, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(again(idx), model(idx), atol=0, rtol=0)


@pytest.mark.parametrize("types", [0, 1, 3])
def test_bert_token_type_count_travels_through_export_and_import(types):
    model = bert_shaped(type_vocab_size=types)
    config, tensors = encoder_to_hf(model)
    again = encoder_from_hf(config, tensors).eval()
    assert again.config.type_vocab_size == max(types, 1)
    idx, keep = padded([10, 6], 10, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(again(idx, key_padding_mask=keep),
                                   model(idx, key_padding_mask=keep), atol=ATOL, rtol=RTOL)


CHAT = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}<assistant>"


def test_save_hf_folder_writes_the_chat_template_tags_the_weights_and_names_its_files(tmp_path):
    bpe = BPETokenizer.train("hello world, the cat sat on the mat.\n" * 20, vocab_size=280)
    model = gpt2_shaped(vocab_size=bpe.vocab_size)
    src = tmp_path / "src"
    save_hf_folder(model, src, tokenizer=bpe)
    (src / "tokenizer_config.json").write_text(json.dumps({"chat_template": CHAT,
                                                           "eos_token": "!"}))
    _, chat_tok = load_hf_folder(src)
    assert chat_tok.chat is not None

    out = tmp_path / "out"
    names = save_hf_folder(model, out, tokenizer=chat_tok)
    assert names == sorted(os.listdir(out))
    assert set(names) == {"config.json", "model.safetensors", "tokenizer.json",
                          "tokenizer_config.json"}
    _, back = load_hf_folder(out)
    messages = [{"role": "user", "content": "hi"}]
    assert back.chat_prompt(messages) == chat_tok.chat_prompt(messages)
    # transformers refuses a safetensors file without the format tag
    with safe_open(out / "model.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}
    # an ordinary folder, not mkdtemp's private 0700 one
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o755 & ~umask


def test_a_failed_write_leaves_no_folder_and_no_temporary_behind(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    parent = tmp_path / "w"
    parent.mkdir()
    monkeypatch.setattr(folder_mod, "save_safetensors", broken)
    with pytest.raises(OSError, match="No space left"):
        save_hf_folder(gpt2_shaped(), parent / "out")
    assert os.listdir(parent) == []


def test_a_file_that_appears_in_the_output_meanwhile_is_never_overwritten(tmp_path,
                                                                         monkeypatch):
    parent = tmp_path / "w"
    parent.mkdir()
    out = parent / "out"
    real_save = folder_mod.save_safetensors

    def save_and_race(tensors, path, **kw):
        real_save(tensors, path, **kw)
        out.mkdir(exist_ok=True)  # another writer fills the output while we write
        (out / "config.json").write_text("theirs")

    monkeypatch.setattr(folder_mod, "save_safetensors", save_and_race)
    with pytest.raises(AttnlabError, match="cannot move the new files"):
        save_hf_folder(gpt2_shaped(), out)
    assert os.listdir(out) == ["config.json"]
    assert (out / "config.json").read_text() == "theirs"
    assert os.listdir(parent) == ["out"]  # the temporary folder is gone
