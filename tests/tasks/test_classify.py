"""Sequence classification runs: config, padding, learning, the CLI and its errors."""

import json

import numpy as np
import pytest
import torch

from attnlab.cli import main
from attnlab.data.lra import load_lra
from attnlab.errors import ConfigError
from attnlab.models import Encoder, EncoderConfig
from attnlab.tasks.classify import SequenceClassification
from attnlab.tasks.config import RunConfig, load_run_config


def sets(pairs):
    return [arg for pair in pairs for arg in ("--set", pair)]


SMALL = ["model.max_len=64",
         "train.batch_size=16", "train.eval_interval=100", "train.checkpoint_interval=100",
         "train.log_interval=5", "train.warmup_steps=5", "train.lr=3e-3"]


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))


def test_recipes_are_classify_runs_with_an_encoder():
    for name in ("lra-listops", "lra-retrieval"):
        cfg = load_run_config(name)
        assert cfg.task == "classify" and isinstance(cfg.model, EncoderConfig)
        assert cfg.model.max_len >= 1024
    assert load_run_config("lra-listops", ["model.attention=local"]).model.attention == "local"


def test_task_names_and_model_keys_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        RunConfig.from_dict({"task": "clasify"})
    with pytest.raises(ConfigError, match="tie_embeddings"):  # a GPT option on an encoder
        RunConfig.from_dict({"task": "classify", "model": {"tie_embeddings": True}})


def task_for(name, length=64, pooling="mean"):
    data = load_lra(name, length)
    torch.manual_seed(0)
    model = Encoder(EncoderConfig(vocab_size=len(data.vocab), d_model=32, n_heads=2,
                                  n_layers=2, max_len=length, pooling=pooling,
                                  num_classes=data.num_classes)).eval()
    return SequenceClassification(model, data, batch_size=8)


def test_padding_is_masked_out_of_the_prediction():
    task = task_for("lra-listops")
    rows = np.arange(8)
    x, mask, _ = task._batch("val", rows)
    assert mask is not None and not mask.all()
    with torch.no_grad():
        batched = task.model(x, key_padding_mask=mask)
        for i in rows:  # each row alone, trimmed to its real tokens: no padding at all
            alone = task.model(x[i: i + 1, : int(mask[i].sum())])
            assert torch.allclose(batched[i], alone[0], atol=1e-5)


def test_unpadded_batches_skip_the_mask():
    task = task_for("lra-retrieval", pooling="cls")
    x, mask, y = task._batch("train", np.arange(4))
    assert mask is None and x.shape == (4, 64) and y.shape == (4,)


def test_evaluate_counts_accuracy():
    task = task_for("lra-retrieval", pooling="cls")
    with torch.no_grad():
        m = task.evaluate(task.model)
        logits = task.model(torch.from_numpy(task.data.tokens["val"].astype(np.int64)))
    want = (logits.argmax(-1).numpy() == task.data.labels["val"]).mean()
    assert m["val_accuracy"] == pytest.approx(want)
    assert m["val_loss"] > 0 and set(task.baselines()) == {"chance_accuracy", "majority_accuracy",
                                                    "first_token_accuracy"}


def test_cli_trains_a_classifier_that_beats_chance(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "lra-retrieval", "--out", str(run), "--no-progress", "--max-steps",
                 "400", *sets(SMALL)]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "first token alone" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["chance_accuracy"] == 0.1
    # chance and the majority class are ~0.1; after a plateau the query finds its pair
    assert rows[-1]["val_accuracy"] > 0.6
    assert (run / "loss.png").is_file() and not (run / "tokenizer.json").exists()

    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["test_accuracy"] > 0.6 and m["val_accuracy"] == pytest.approx(rows[-1]["val_accuracy"])

    assert main(["generate", str(run), "--prompt", "x"]) == 2
    assert "language model" in capsys.readouterr().err
    # its evaluation scores whole splits: a bound on batches is refused, not ignored
    assert main(["eval", str(run), "--batches", "1"]) == 2
    assert "classify run is evaluated on its whole splits" in capsys.readouterr().err


def test_cli_resumes_a_classifier_bit_identically(tmp_path):
    straight, stopped = tmp_path / "a", tmp_path / "b"
    # a constant schedule: the cosine one depends on max_steps, which the stop changes
    args = ["--no-progress", *sets([*SMALL, "train.schedule=constant"])]
    assert main(["train", "lra-listops", "--out", str(straight), "--max-steps", "20", *args]) == 0
    assert main(["train", "lra-listops", "--out", str(stopped), "--max-steps", "10", *args]) == 0
    assert main(["train", "--resume", "--out", str(stopped), "--max-steps", "20",
                 "--no-progress"]) == 0
    from safetensors.torch import load_file
    a = load_file(str(straight / "last" / "model.safetensors"))
    b = load_file(str(stopped / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
