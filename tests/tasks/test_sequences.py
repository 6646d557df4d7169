import json

import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.data.synthetic import make_sequences
from attnlab.errors import ConfigError
from attnlab.models.config import Seq2SeqConfig
from attnlab.models.seq2seq import EncoderDecoder
from attnlab.tasks.config import load_run_config, recipes
from attnlab.tasks.sequences import decode_greedy, evaluate_sequences, parse_source


def test_recipes_load_and_parse():
    for kind in ("copy", "reverse", "sort"):
        assert f"rnn-{kind}" in recipes()
        cfg = load_run_config(f"rnn-{kind}")
        assert cfg.task == "rnn-seq" and parse_source(cfg.data.source, cfg.model.max_len) == (
            kind, 4, 24)
    assert parse_source("sort", 12) == ("sort", 1, 12)
    with pytest.raises(ConfigError, match="did you mean 'reverse'"):
        parse_source("revers", 8)
    with pytest.raises(ConfigError, match=r"need 1 <= MIN <= MAX <= model\.max_len"):
        parse_source("copy:4-30", 24)
    with pytest.raises(ConfigError, match="written ':MIN-MAX'"):
        parse_source("copy:4to8", 24)


def test_transformer_greedy_with_a_cache_equals_argmax_of_teacher_forcing():
    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqConfig(vocab_size=10, d_model=16, n_heads=2, n_layers=1,
                                         max_len=32)).eval()
    data = make_sequences("reverse", 4, min_len=3, max_len=6, n_symbols=7)
    ids = decode_greedy(model, data.src, data.src_mask, 7)
    tgt_in = torch.cat([torch.ones(4, 1, dtype=torch.long), ids[:, :-1]], 1)
    with torch.no_grad():
        logits = model(data.src, tgt_in, src_key_padding_mask=data.src_mask)
    done = torch.cumsum(ids == 2, 1) - (ids == 2).long() > 0  # after the first EOS: forced EOS
    assert torch.equal(logits.argmax(-1)[~done], ids[~done])
    m = evaluate_sequences(model, data)
    assert 0 <= m["val_token_acc"] <= 1 and m["val_loss"] > 0


def test_rnn_reverse_trains_and_evaluates_from_the_command_line(tmp_path, capsys):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "task": "rnn-seq",
        "model": {"vocab_size": 8, "d_embed": 8, "hidden": 16, "attention": "luong-local",
                  "local_mode": "p", "window": 2, "max_len": 6},
        "data": {"source": "reverse:2-6"},
        "train": {"max_steps": 4, "batch_size": 8, "eval_interval": 2, "checkpoint_interval": 2,
                  "log_interval": 1, "warmup_steps": 1, "precision": "fp32"}}))
    run = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    assert "exact sequences" in capsys.readouterr().out
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert {"val_seq_acc", "test_token_acc", "chance_token_acc"} <= set(m)
    assert m["chance_token_acc"] == 0.2 and 0 <= m["test_token_acc"] <= 1
    recipe.write_text(recipe.read_text().replace("reverse:2-6", "reverse:2-9"))
    assert main(["train", str(recipe), "--out", str(tmp_path / "r2"), "--no-progress"]) == 2
    assert "MAX <= model.max_len (6)" in capsys.readouterr().err
