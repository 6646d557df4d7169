"""The run lifecycle where the end-to-end CLI tests leave gaps: what `attnlab train` prints at
the end, the signal handlers it restores, a resume under another recipe, what a failed new run
leaves of a directory the user made, and `load_run` / `predict_run` fallbacks."""

import json
import re
import shutil
import signal

import pytest

from attnlab.cli import main
from attnlab.errors import AttnlabError
from tests.tasks.test_train_cli import refused, setup  # noqa: F401  (the fixture)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_the_final_report_gives_the_runs_own_numbers_sample_and_paths(setup, capsys):  # noqa: F811
    """The closing lines: validation loss and bits/char of the last evaluation, the unigram
    baseline of step 0, the sample the saved model gives with the run's seed, and the paths."""
    from attnlab.generate import generate_text
    from attnlab.tasks.run import load_run

    tmp, recipe = setup
    run = tmp / "run"
    capsys.readouterr()
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2", "--no-progress",
                 "--set", "train.sample_tokens=40", "--set", "train.seed=7"]) == 0
    out = capsys.readouterr().out
    rows = _rows(run)
    last = [r for r in rows if "val_loss" in r][-1]
    assert last["step"] == 2
    found = re.search(r"validation loss ([\d.]+) nats/token \(([\d.]+) bits/char\) after (\d+) "
                      r"steps; unigram baseline ([\d.]+)", out)
    assert found, out
    val, bits, steps, unigram = found.groups()
    assert float(val) == pytest.approx(last["val_loss"], abs=1e-4)
    assert float(bits) == pytest.approx(last["bits_per_char"], abs=1e-3)
    assert int(steps) == 2
    assert float(unigram) == pytest.approx(rows[0]["unigram_loss"], abs=1e-4)
    assert float(unigram) != pytest.approx(float(val), abs=1e-4)  # two different numbers
    model, tokenizer, _ = load_run(run)
    sample = generate_text(model, tokenizer, "\n", max_new_tokens=40, temperature=0.8,
                           top_k=50, seed=7).strip("\n")
    rule = "-" * 60
    assert f"sample (temperature 0.8, top-k 50):\n{rule}\n{sample}\n{rule}\n" in out
    assert out.endswith(f"run directory: {run}\nloss plot: {run / 'loss.png'}\n")
    assert (run / "loss.png").is_file()


def test_train_gives_back_the_signal_handlers_it_found(setup):  # noqa: F811
    """`main` is callable in-process (notebooks, tests): after it, SIGTERM and SIGHUP do what
    they did before, not raise the training run's stop."""
    tmp, recipe = setup

    def mine(signum, frame):
        pass

    before = {s: signal.signal(s, mine) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        assert main(["train", str(recipe), "--out", str(tmp / "run"), "--max-steps", "1",
                     "--no-progress"]) == 0
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGHUP) is mine
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_resume_under_another_recipe_with_nothing_typed_is_refused(setup, capsys):  # noqa: F811
    """The recipe given on --resume is compared too, not only the --set values."""
    import yaml

    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2",
                 "--no-progress"]) == 0
    other = yaml.safe_load(recipe.read_text())
    other["model"]["n_layers"] = 3
    bigger = tmp / "bigger.yaml"
    bigger.write_text(yaml.safe_dump(other))
    before = (run / "last" / "model.safetensors").read_bytes()
    refused(capsys, ["train", str(bigger), "--resume", "--out", str(run), "--max-steps", "4"],
            "holds another model: model.n_layers is 2 there, 3 here")
    assert (run / "last" / "model.safetensors").read_bytes() == before


def test_a_failed_new_run_empties_a_directory_it_did_not_make_but_keeps_it(
        setup, monkeypatch, capsys):  # noqa: F811
    """A run interrupted in its first checkpoint write (last.tmp/ half written) in an empty
    directory the user made: the directory stays, empty; one the run made goes."""
    import attnlab.train.checkpoint as checkpoint

    tmp, recipe = setup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save_safetensors", interrupted)
    mine = tmp / "mine"
    mine.mkdir()
    assert main(["train", str(recipe), "--out", str(mine), "--no-progress"]) == 130
    assert mine.is_dir() and list(mine.iterdir()) == []
    assert main(["train", str(recipe), "--out", str(tmp / "made"), "--no-progress"]) == 130
    assert not (tmp / "made").exists()
    assert "left nothing" in capsys.readouterr().err


def test_load_run_falls_back_to_last_only_for_best(setup):  # noqa: F811
    from safetensors.torch import load_file

    from attnlab.tasks.run import load_run

    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2",
                 "--no-progress"]) == 0
    shutil.rmtree(run / "best", ignore_errors=True)  # no validation has improved yet
    model, _, _ = load_run(run)  # best/ missing: last/
    saved = load_file(str(run / "last" / "model.safetensors"))
    state = model.state_dict()
    assert all(state[k].equal(v) for k, v in saved.items())
    shutil.rmtree(run / "last")
    for which in ("best", "last"):
        with pytest.raises(AttnlabError, match=rf"no weights \({which}/ checkpoint missing\)"):
            load_run(run, checkpoint=which)


def test_predict_refuses_a_run_that_does_not_classify_text(setup):  # noqa: F811
    from attnlab.tasks.run import predict_run

    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "1",
                 "--no-progress"]) == 0
    with pytest.raises(AttnlabError, match="is a 'lm' run; predict needs a text classifier"):
        predict_run(run, ["to be"])


def test_resume_without_a_checkpoint_is_refused_and_changes_nothing(setup, capsys):  # noqa: F811
    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2",
                 "--no-progress"]) == 0
    shutil.rmtree(run / "last")
    config, metrics = (run / "config.json").read_text(), (run / "metrics.jsonl").read_text()
    refused(capsys, ["train", "--resume", "--out", str(run), "--max-steps", "4"],
            f"--resume: no checkpoint in {run}; nothing to resume")
    assert not (run / "last").exists()
    assert (run / "config.json").read_text() == config
    assert (run / "metrics.jsonl").read_text() == metrics


def test_a_named_data_set_refuses_a_sha256_pin(tmp_path, monkeypatch):
    """A corpus name has no file to hash: a data.sha256 for it is one clear error, for a new
    run and for a resumed one alike."""
    from attnlab.tasks.config import RunConfig
    from attnlab.tasks.run import check_data

    monkeypatch.chdir(tmp_path)  # no file named like the corpus here
    cfg = RunConfig.from_dict({"data": {"source": "shakespeare", "sha256": "ab" * 32}})
    for fresh in (True, False):
        with pytest.raises(AttnlabError, match=r"'shakespeare' is a named data set .*drop "
                                               r"data\.sha256"):
            check_data(cfg, fresh=fresh)
    cfg.data.sha256 = None
    assert check_data(cfg, fresh=True).sha256 is None


def test_switching_to_cosine_on_resume_is_announced_even_at_the_same_length(tmp_path):
    """From constant to cosine at the same max_steps: the learning rate from the checkpoint on
    is not the run's, and the resume says so (as it does when max_steps grows)."""
    import dataclasses

    from attnlab.tasks.config import load_run_config
    from attnlab.tasks.run import _continue_records

    cfg = load_run_config("gpt-char", ["train.schedule=constant", "train.max_steps=100"])
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    cosine = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="cosine"))
    said = []
    _continue_records(tmp_path, cosine, 10, said.append)
    assert said[0] == "resuming with train.schedule 'constant' -> 'cosine'", said
    assert any("the cosine schedule now decays over 100 steps" in line for line in said), said
    saved = json.loads((tmp_path / "config.json").read_text())["train"]
    assert saved["schedule"] == "cosine"


def test_resume_drops_a_damaged_metrics_row_after_the_checkpoint(tmp_path):
    """A row no JSON reader takes (a torn row a later write ran into) is dropped with the rows
    after the checkpoint, not kept as if it were step 0."""
    from attnlab.tasks.config import load_run_config
    from attnlab.tasks.run import _continue_records

    cfg = load_run_config("gpt-char")
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    good = [json.dumps({"step": 0, "unigram_loss": 3.0}), json.dumps({"step": 4, "loss": 2.0})]
    (tmp_path / "metrics.jsonl").write_text(
        "\n".join(good) + '\n{"step": 6, "lo{"step": 7, "loss": 1.0}\n'
        + json.dumps({"step": 8, "loss": 1.5}) + "\n")
    said = []
    _continue_records(tmp_path, cfg, 4, said.append)
    assert said == []  # nothing changed in train
    assert (tmp_path / "metrics.jsonl").read_text() == "\n".join(good) + "\n"


def test_a_damaged_config_json_is_one_line(setup, capsys):  # noqa: F811
    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "1",
                 "--no-progress"]) == 0
    (run / "config.json").write_text('{"task": "lm", "mod')  # cut short
    refused(capsys, ["train", "--resume", "--out", str(run), "--max-steps", "2"],
            "config.json is corrupt (not JSON)")
    refused(capsys, ["eval", str(run)], "config.json is not readable JSON")


def test_a_new_run_makes_the_missing_parents_of_its_directory(setup, capsys):  # noqa: F811
    tmp, recipe = setup
    run = tmp / "runs" / "deep" / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "1",
                 "--no-progress"]) == 0
    assert (run / "last").is_dir()


def test_evaluate_refuses_a_boolean_batch_count(setup):  # noqa: F811
    from attnlab.tasks.run import evaluate_run

    tmp, _ = setup
    for bad in (True, False, 0, 1.5):
        with pytest.raises(AttnlabError, match="batches must be an integer >= 1"):
            evaluate_run(tmp / "nowhere", batches=bad)


def test_only_rank_0_reports_the_end_of_a_distributed_run(setup, monkeypatch, capsys):  # noqa: F811
    import attnlab.tasks.run as run_mod

    tmp, recipe = setup
    summary = {"step": 2, "val_loss": 1.5, "bits_per_char": 2.0, "unigram_loss": 3.0}
    monkeypatch.setattr(run_mod, "train_run", lambda *a, **k: dict(summary))
    capsys.readouterr()
    monkeypatch.setenv("RANK", "1")
    assert main(["train", str(recipe), "--out", str(tmp / "run"), "--no-progress"]) == 0
    assert capsys.readouterr() == ("", "")
    monkeypatch.setenv("RANK", "0")
    assert main(["train", str(recipe), "--out", str(tmp / "run"), "--no-progress"]) == 0
    assert "validation loss 1.5000 nats/token" in capsys.readouterr().out
