"""Another mechanism in a pretrained model (same weights), and `attnlab eval` on HF folders."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.cli import main
from attnlab.data import BPETokenizer, train_tokenizer
from attnlab.errors import AttnlabError, ConfigError
from attnlab.interop import load_hf_folder
from attnlab.models import GPT, Encoder, EncoderConfig, GPTConfig
from attnlab.models.swap import with_attention
from attnlab.tasks.lm import held_out_loss
from tests.interop.tiny import hf_gpt2, hf_llama, scale_

TEXT = "the cat sat on the mat. attention is all you need! hello world, a dog ran fast.\n" * 40


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(TEXT, vocab_size=300)


def tiny_gpt(vocab: int = 50, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(vocab_size=vocab, d_model=32, n_heads=4, n_layers=2, max_len=64,
                    positional="rope", **kw)
    return scale_(GPT(cfg)).eval()


def logits(model, idx):
    with torch.no_grad():
        return model(idx)


def test_swap_to_the_same_mechanism_changes_nothing():
    model, idx = tiny_gpt(), torch.randint(0, 50, (2, 40))
    swap = with_attention(model, "full", {"impl": "eager"})
    assert swap.new == [] and swap.dropped == []
    torch.testing.assert_close(logits(swap.model, idx), logits(model, idx), atol=1e-5, rtol=1e-5)


def test_local_with_a_window_covering_the_sequence_equals_full_and_a_short_one_differs():
    model, idx = tiny_gpt(n_kv_heads=2), torch.randint(0, 50, (2, 40))  # grouped-query too
    wide = with_attention(model, "local", {"window": 40}).model
    torch.testing.assert_close(logits(wide, idx), logits(model, idx), atol=1e-5, rtol=1e-5)
    narrow = with_attention(model, "local", {"window": 4}).model
    got = logits(narrow, idx)
    # inside the window nothing changes; past it the outputs move
    torch.testing.assert_close(got[:, :4], logits(model, idx)[:, :4], atol=1e-5, rtol=1e-5)
    assert (got[:, 20:] - logits(model, idx)[:, 20:]).abs().max() > 1e-2
    assert narrow.config.attention == "local" and model.config.attention == "full"


def test_swap_reports_what_has_no_pretrained_value_and_what_is_dropped():
    model = tiny_gpt()
    shared = with_attention(model, "lsh", {"shared_qk": True})
    assert shared.dropped and all("k_proj" in name for name in shared.dropped)
    assert shared.new == []
    own_keys = with_attention(model, "lsh", {"shared_qk": False})
    assert own_keys.dropped == [] and own_keys.new == []
    enc = Encoder(EncoderConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=1, max_len=64))
    lin = with_attention(enc, "linformer", {"seq_len": 64, "k": 8})
    assert lin.new and all(".attn." in name for name in lin.new)  # the projections E, F
    assert any("attention" in note or "initialized" in note for note in lin.notes())
    for name, tensor in enc.state_dict().items():  # every pretrained tensor is carried over
        torch.testing.assert_close(lin.model.state_dict()[name], tensor)


def test_a_swap_the_model_cannot_take_is_an_error():
    with pytest.raises(ConfigError, match="not causal"):
        with_attention(tiny_gpt(), "linformer")
    with pytest.raises(ConfigError, match="no option 'size'"):
        with_attention(tiny_gpt(), "local", {"size": 3})
    with pytest.raises(AttnlabError, match="no attention mechanism to swap"):
        with_attention(torch.nn.Linear(2, 2), "local")
    from attnlab.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig

    rnn = RNNSeq2Seq(RNNSeq2SeqConfig(vocab_size=10, d_embed=8, hidden=8, max_len=8))
    with pytest.raises(AttnlabError, match="RNNSeq2Seq has no attention mechanism to swap"):
        with_attention(rnn, "local")  # its `attention` names a Luong decoder, not a mechanism


def test_held_out_loss_equals_a_hand_computed_chunked_cross_entropy(bpe):
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=bpe.vocab_size, d_model=32, n_heads=4, n_layers=2,
                          max_len=32)).eval()
    m = held_out_loss(model, bpe, TEXT, context=16, max_tokens=50, batch_size=2)
    ids = bpe.encode(TEXT[int(len(TEXT) * 0.9):])[:51]
    total = 0.0
    for s in range(0, 50, 16):  # windows 16, 16, 16 and a last one of 2
        window = ids[s: s + 17]
        x, y = torch.tensor([window[:-1]]), torch.tensor([window[1:]])
        total += F.cross_entropy(logits(model, x)[0], y[0], reduction="sum").item()
    assert m["tokens"] == 50
    assert m["val_loss"] == pytest.approx(total / 50, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(total / 50), rel=1e-5)
    chars = len(bpe.decode(ids[1:]))
    assert m["bits_per_char"] == pytest.approx(total / math.log(2) / chars, rel=1e-5)
    with pytest.raises(AttnlabError, match="context must be in"):
        held_out_loss(model, bpe, TEXT, context=33)


def run(*args):
    return main([str(a) for a in args])


def hf_folder(tmp_path, hf, tokenizer):
    folder = tmp_path / "hf"
    hf.save_pretrained(folder)
    (folder / "tokenizer.json").write_text(tokenizer.to_json())
    return folder


@pytest.mark.parametrize("make", [hf_gpt2, hf_llama], ids=["gpt2", "llama"])
def test_eval_reads_an_hf_folder_and_scores_a_text_file(tmp_path, bpe, capsys, make):
    folder = hf_folder(tmp_path, make(vocab=bpe.vocab_size), bpe)
    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    assert run("eval", folder, "--data", text, "--tokens", 40, "--context", 16, "--json") == 0
    got = json.loads(capsys.readouterr().out)
    model, tokenizer = load_hf_folder(folder)
    want = held_out_loss(model, tokenizer, TEXT, context=16, max_tokens=40)
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
    assert got["attention"] == "full" and got["context"] == 16

    assert run("eval", folder, "--data", text, "--tokens", 40, "--context", 16, "--json",
               "--attention", "local", "--option", "window=4") == 0
    local = json.loads(capsys.readouterr().out)
    assert local["attention"] == "local" and local["attention_options"] == {"window": 4}
    swapped = with_attention(model, "local", {"window": 4}).model.eval()
    want = held_out_loss(swapped, tokenizer, TEXT, context=16, max_tokens=40)
    assert local["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
    assert local["val_loss"] != pytest.approx(got["val_loss"], rel=1e-3)


def test_eval_of_a_run_under_another_mechanism(tmp_path, capsys):
    from attnlab.interop import save_attnlab_folder
    from attnlab.tasks.run import evaluate_run

    text = tmp_path / "text.txt"
    text.write_text(TEXT)
    tok = train_tokenizer("char", TEXT)
    model = tiny_gpt(vocab=tok.vocab_size)
    run_dir = tmp_path / "run"
    save_attnlab_folder(model, run_dir, tokenizer=tok)
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg["data"] = {"source": str(text)}
    (run_dir / "config.json").write_text(json.dumps(cfg))
    full = evaluate_run(run_dir, batches=2)
    local = evaluate_run(run_dir, batches=2, attention="local", options={"window": 2})
    assert local["val_loss"] != pytest.approx(full["val_loss"], rel=1e-3)
    wide = evaluate_run(run_dir, batches=2, attention="local", options={"window": 64})
    assert wide["val_loss"] == pytest.approx(full["val_loss"], rel=1e-4)
    with pytest.raises(AttnlabError, match="batches must be an integer >= 1"):
        evaluate_run(run_dir, batches=0)  # not "0 = the default"


def expect_error(capsys, args, message):
    capsys.readouterr()
    assert run(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("attnlab: error: "), err
    assert message in err, err


def test_bad_eval_flags_are_one_line(tmp_path, bpe, capsys):
    folder = hf_folder(tmp_path, hf_gpt2(vocab=bpe.vocab_size), bpe)
    expect_error(capsys, ["eval", folder, "--option", "window=4"], "--option needs --attention")
    expect_error(capsys, ["eval", folder, "--attention", "lokal"], "did you mean 'local'")
    expect_error(capsys, ["eval", folder, "--attention", "local", "--option", "a.b=1"],
                 "plain name")
    expect_error(capsys, ["eval", folder, "--batches", "2"], "--batches is for run directories")
    expect_error(capsys, ["eval", folder, "--data", tmp_path / "missing.txt"], "no such file")
    expect_error(capsys, ["eval", folder, "--context", "100"], "context must be in")
