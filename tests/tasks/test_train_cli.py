"""The main job end to end through the CLI: train, resume, kill, distribute, evaluate."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from attnlab.cli import main
from attnlab.data import load_tokenizer

TINY = {
    "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "max_len": 32, "dropout": 0.1},
    "data": {"tokenizer": "char"},
    "train": {"max_steps": 8, "batch_size": 4, "eval_interval": 4, "eval_batches": 2,
              "checkpoint_interval": 2, "log_interval": 1, "sample_tokens": 0,
              "precision": "fp32", "warmup_steps": 2, "lr": 3e-3},
}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    text = tmp_path / "corpus.txt"
    lines = [f"{w} the {v} of {n}\n" for w in ("to be", "or not", "a rose", "my lord")
             for v in ("king", "queen", "fool") for n in range(40)]
    text.write_text("".join(lines))
    recipe = tmp_path / "tiny.yaml"
    cfg = json.loads(json.dumps(TINY))
    cfg["data"]["source"] = str(text)
    recipe.write_text(yaml.safe_dump(cfg))
    return tmp_path, recipe


def weights(run: Path, which="last"):
    return load_file(str(run / which / "model.safetensors"))


def assert_same_weights(a: Path, b: Path):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "attnlab", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_train_writes_a_complete_run_directory(setup, capsys):
    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "validation loss" in out and "unigram baseline" in out and str(run) in out
    names = {p.name for p in run.iterdir()}
    assert {"config.json", "tokenizer.json", "metrics.jsonl", "loss.png", "last",
            "best"} <= names
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["vocab_size"] == load_tokenizer(run / "tokenizer.json").vocab_size
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["unigram_loss"] > 0
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8]
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["perplexity"] == pytest.approx(2.718281828 ** m["val_loss"], rel=1e-6)
    assert m["bits_per_char"] > 0


def test_stopped_and_resumed_runs_are_bit_identical_to_a_straight_one(setup):
    """A time limit stops a run (with a checkpoint) after one step; resuming twice with
    `--max-minutes` finishes it. Learning rates, data order and dropout all line up."""
    tmp, recipe = setup
    assert main(["train", str(recipe), "--out", str(tmp / "a"), "--no-progress"]) == 0
    b = tmp / "b"
    assert main(["train", str(recipe), "--out", str(b), "--no-progress",
                 "--max-minutes", "1e-9"]) == 0
    assert json.loads((b / "last" / "trainer.json").read_text())["step"] == 1
    assert main(["train", "--resume", "--out", str(b), "--no-progress",
                 "--max-minutes", "1e-9"]) == 0
    assert json.loads((b / "last" / "trainer.json").read_text())["step"] == 2
    assert main(["train", "--resume", "--out", str(b), "--no-progress",
                 "--max-minutes", "0"]) == 0
    assert_same_weights(tmp / "a", b)


@pytest.mark.parametrize("point", ["before_swap", "mid_swap"])
def test_sigkill_during_a_checkpoint_write_then_resume_is_bit_identical(setup, point):
    tmp, recipe = setup
    env = {**os.environ, "ATTNLAB_HOME": str(tmp / "home")}
    straight = tmp / "straight"
    done = cli("train", str(recipe), "--out", str(straight), "--no-progress", env=env)
    assert done.returncode == 0, done.stderr
    killed = tmp / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab", "train", str(recipe), "--out", str(killed),
         "--no-progress"], env={**env, "ATTNLAB_CHECKPOINT_FAULT": point},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:  # the step-4 checkpoint pauses while replacing step 2's
        if "checkpoint fault point" in line:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    resumed = cli("train", "--resume", "--out", str(killed), "--no-progress", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights(straight, killed)


@pytest.mark.parametrize("accum", [1, 2])  # 2: DDP's no_sync() on the first micro-batch
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(setup, accum):
    tmp, recipe = setup
    env = {**os.environ, "ATTNLAB_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}
    common = ["train", str(recipe), "--no-progress", "--set", "model.dropout=0.0",
              "--set", "train.max_steps=6", "--set", f"train.grad_accum={accum}"]
    one = cli(*common, "--out", str(tmp / "one"), env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(29517 + accum), "-m", "attnlab", *common, "--out",
         str(tmp / "two")],
        capture_output=True, text=True, timeout=300, env=env)
    assert two.returncode == 0, two.stderr[-3000:]

    def losses(run):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    a, b = losses(tmp / "one"), losses(tmp / "two")
    assert len(a) == len(b) == 6
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) < 1e-4, (a, b)
    # one process reports: the validation lines appear as often as in the one-process run
    assert two.stdout.count("val_loss") == one.stdout.count("val_loss") == 2, two.stdout


def run_fails(args, message, env=None):
    """The `attnlab` process refuses `args`: exit 2, one line naming `message`."""
    result = cli(*args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    return result


def refused(capsys, args, message):
    """The CLI's entry point refuses `args`: exit 2, one line naming `message`. In-process, as
    most refusals are checked (a subprocess costs ~3 s of imports); test_cli.py and the
    subprocess cases here hold the real process to the same contract."""
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_bad_input_is_one_line_exit_2_and_nothing_overwritten(setup, capsys, monkeypatch):
    tmp, recipe = setup
    env = {**os.environ, "ATTNLAB_HOME": str(tmp / "home")}
    busy = tmp / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    refused(capsys, ["train", str(recipe), "--out", str(busy)], "not empty")
    assert (busy / "keep.txt").read_text() == "mine" and len(list(busy.iterdir())) == 1
    refused(capsys, ["train", str(recipe), "--out", str(busy), "--resume"], "not an attnlab run")
    refused(capsys, ["train", "gpt-chr"], "did you mean 'gpt-char'")
    refused(capsys, ["train", str(recipe), "--set", "train.lrr=1"], "did you mean 'train.lr'")
    empty = tmp / "empty.txt"
    empty.write_text("")
    refused(capsys, ["train", str(recipe), "--set", f"data.source={empty}", "--out",
                     str(tmp / "e")], "empty")
    binary = tmp / "bin.dat"
    binary.write_bytes(b"\x00\x01\x02" * 100)
    refused(capsys, ["train", str(recipe), "--set", f"data.source={binary}", "--out",
                     str(tmp / "f")], "binary")
    refused(capsys, ["train", str(recipe), "--set", f"data.source={tmp / 'nope.txt'}", "--out",
                     str(tmp / "g")], "nope.txt")
    refused(capsys, ["train", str(recipe), "--data", str(tmp / "nope.txt"), "--out",
                     str(tmp / "h")], "nope.txt")  # --data is data.source
    refused(capsys, ["train", str(recipe), "--set", "model.max_len=100000", "--out",
                     str(tmp / "j")], "the training split holds")  # before any step
    refused(capsys, ["train", str(recipe), "--max-minutes", "-2", "--out", str(tmp / "k")],
            "train.max_minutes must be >= 0, got -2.0")
    refused(capsys, ["eval", str(tmp), "--batches", "0"], "expected an integer >= 1")
    # what the file system refuses is one line too: an unusable cache, an --out it won't make
    (tmp / "a-file").write_text("")
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp / "a-file"))
    refused(capsys, ["train", str(recipe), "--out", str(tmp / "l")],
            f"cannot use {tmp / 'a-file'} as attnlab's cache, $ATTNLAB_HOME: it is a file")
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp / "home"))
    refused(capsys, ["train", str(recipe), "--out", "/proc/attnlab-nothing/run"],
            "No such file or directory: '/proc/attnlab-nothing")
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("model: [unclosed\n")
    refused(capsys, ["train", str(bad_yaml)], "not valid YAML")
    empty_yaml = tmp / "empty.yaml"
    empty_yaml.write_text("# nothing yet\n")
    refused(capsys, ["train", str(empty_yaml)], "empty.yaml is empty; give at least one section")
    refused(capsys, ["train", str(recipe), "--out", str(empty_yaml)], "is a file")
    refused(capsys, ["eval", str(tmp), "--attention", "local", "--option", "window"],
            "--option takes key=value, got 'window'")
    # A run that fails after writing its config (fp16 is refused on a CPU only once the
    # trainer is built) leaves nothing behind, so the same command can simply be rerun. In a
    # real process: the GradScaler warning it must not print would bypass capsys.
    fp16 = run_fails(["train", str(recipe), "--set", "train.precision=fp16", "--out",
                      str(tmp / "i")], "needs a GPU", env)
    assert len(fp16.stderr.strip().splitlines()) == 1, fp16.stderr  # no GradScaler warning
    for d in ("e", "f", "g", "h", "i", "j", "k", "l"):
        assert not (tmp / d).exists()


def test_two_new_runs_never_share_a_directory(setup, capsys, monkeypatch):
    """Both may pass prepare_run's emptiness check at once; the atomic claim lets one on."""
    import attnlab.tasks.run as run_mod

    tmp, recipe = setup
    out = tmp / "shared"
    out.mkdir()
    check = run_mod.prepare_run

    def then(name, text):  # another run acts between our check and our claim
        def prepare(*args, **kwargs):
            result = check(*args, **kwargs)
            (out / name).write_text(text)
            return result
        return prepare

    monkeypatch.setattr(run_mod, "prepare_run", then(run_mod._CLAIM, ""))
    refused(capsys, ["train", str(recipe), "--out", str(out)], "is taken by another run")
    assert [p.name for p in out.iterdir()] == [run_mod._CLAIM]  # its claim left alone
    (out / run_mod._CLAIM).unlink()
    monkeypatch.setattr(run_mod, "prepare_run", then("config.json", "{}"))
    refused(capsys, ["train", str(recipe), "--out", str(out)], "exists and is not empty")
    assert [p.name for p in out.iterdir()] == ["config.json"]
    monkeypatch.undo()
    (out / "config.json").unlink()
    assert main(["train", str(recipe), "--out", str(out), "--max-steps", "2",
                 "--no-progress"]) == 0
    assert not (out / run_mod._CLAIM).exists() and (out / "last").is_dir()


def test_sizes_the_data_set_are_checked_not_replaced(setup, capsys):
    tmp, recipe = setup
    # The char tokenizer's vocabulary is the text's: a BPE size for it would be ignored.
    refused(capsys, ["train", str(recipe), "--set", "data.vocab_size=500", "--out",
                     str(tmp / "a")], "data.vocab_size=500 sizes a bpe tokenizer")
    # A model vocabulary other than the tokenizer's is refused, and the run leaves nothing.
    refused(capsys, ["train", str(recipe), "--set", "model.vocab_size=1000", "--out",
                     str(tmp / "b")], "model.vocab_size=1000 does not fit the data, which give")
    assert not (tmp / "a").exists() and not (tmp / "b").exists()
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2",
                 "--no-progress"]) == 0
    saved = json.loads((run / "config.json").read_text())
    vocab = saved["model"]["vocab_size"]
    assert vocab == load_tokenizer(run / "tokenizer.json").vocab_size
    # The value the data give may be stated (a saved config.json, replayed, states it) ...
    replay = tmp / "replay.json"
    replay.write_text(json.dumps(saved))
    assert main(["train", str(replay), "--out", str(tmp / "again"), "--max-steps", "1",
                 "--no-progress"]) == 0
    # ... and on --resume another one is another model.
    refused(capsys, ["train", "--resume", "--out", str(run), "--set", "model.vocab_size=1000"],
            f"holds another model: model.vocab_size is {vocab} there, 1000 here")


def test_data_flag_names_the_training_text(setup, capsys):
    tmp, recipe = setup
    other = tmp / "other.txt"
    other.write_text("a b a b abba baab " * 200)
    run = tmp / "run"
    assert main(["train", str(recipe), "--data", str(other), "--out", str(run),
                 "--max-steps", "1", "--no-progress"]) == 0
    assert json.loads((run / "config.json").read_text())["data"]["source"] == str(other)
    # the tokenizer was fitted to that text: a, b and space beside the 256 byte fallbacks
    assert load_tokenizer(run / "tokenizer.json").vocab_size == 256 + 3


def test_a_run_pins_its_data_by_absolute_path_and_sha256(setup, monkeypatch, capsys):
    import hashlib

    tmp, recipe = setup
    work, elsewhere = tmp / "work", tmp / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    text = (tmp / "corpus.txt").read_text()
    (work / "rel.txt").write_text(text)
    monkeypatch.chdir(work)
    assert main(["train", str(recipe), "--data", "rel.txt", "--out", "run", "--max-steps", "2",
                 "--no-progress"]) == 0
    run = work / "run"
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["source"] == str(work / "rel.txt")
    assert data["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    # the same relative --data on resume is the same source
    assert main(["train", "--resume", "--out", "run", "--data", "rel.txt", "--max-steps", "4",
                 "--no-progress"]) == 0
    monkeypatch.chdir(elsewhere)  # a run is evaluated from anywhere
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert "validation loss" in capsys.readouterr().out
    # the text changed under the run: eval and resume refuse, and the run is untouched
    (work / "rel.txt").write_text(text.replace("king", "kong"))
    before = weights(run)
    for args in (["eval", str(run)], ["train", "--resume", "--out", str(run), "--max-steps", "6",
                                      "--no-progress"]):
        refused(capsys, args, "but the run was trained on data with sha256 "
                              f"{data['sha256'][:12]}")
    assert all(torch.equal(before[k], v) for k, v in weights(run).items())
    # a new run may pin the text it expects
    refused(capsys, ["train", str(recipe), "--data", str(work / "rel.txt"), "--set",
                     f"data.sha256={data['sha256']}", "--out", str(tmp / "pinned")],
            "but data.sha256 asks for")
    assert not (tmp / "pinned").exists()


def test_resume_keeps_the_runs_settings_and_records_what_was_typed(setup, capsys):
    from attnlab.tasks.run import prepare_run

    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress", "--max-steps", "4",
                 "--set", "train.lr=0.01", "--set", "train.schedule=constant"]) == 0
    # A killed run logged steps after its checkpoint (and tore its last line): they go.
    rows = (run / "metrics.jsonl").read_text()
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 9.0}) + "\n" + '{"step": 6, "lo')
    # The recipe's own train section (lr 3e-3, cosine) does not replace the run's.
    cfg, out = prepare_run(str(recipe), [], str(run), resume=True)
    assert out == run and (cfg.train.lr, cfg.train.schedule) == (0.01, "constant")
    capsys.readouterr()
    assert main(["train", str(recipe), "--resume", "--out", str(run), "--no-progress",
                 "--max-steps", "6"]) == 0
    out_text = capsys.readouterr().out
    assert "resuming with train.max_steps 4 -> 6" in out_text and "cosine" not in out_text
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["max_steps"], train["lr"], train["schedule"]) == (6, 0.01, "constant")
    after = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert (run / "metrics.jsonl").read_text().startswith(rows)
    steps = [r["step"] for r in after if "loss" in r]
    assert steps == [1, 2, 3, 4, 5, 6] and 9.0 not in [r.get("loss") for r in after]
    # Stretching a cosine schedule is announced: from the stop on it is another run.
    assert main(["train", "--resume", "--out", str(run), "--no-progress", "--max-steps", "8",
                 "--set", "train.schedule=cosine"]) == 0
    assert "the cosine schedule now decays over 8 steps" in capsys.readouterr().out


def test_interrupted_runs_keep_their_checkpoint_or_leave_nothing(setup, monkeypatch, capsys):
    """Ctrl-C: one line and exit 130; before the first checkpoint the run directory goes (a
    rerun of the same command works), after it the run stays resumable."""
    from attnlab.train.trainer import Trainer

    tmp, recipe = setup
    run = tmp / "run"

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "fit", interrupt)
        assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "interrupted" in err and "left nothing" in err, err
    assert not run.exists()
    save = Trainer.save

    def save_then_interrupt(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save", save_then_interrupt)
        assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--resume --out {run}" in err, err
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 2
    assert main(["train", "--resume", "--out", str(run), "--no-progress"]) == 0
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 8
    # Under torchrun every process gets the Ctrl-C: the line is rank 0's alone.
    import attnlab.tasks.run

    monkeypatch.setattr(attnlab.tasks.run, "train_run", interrupt)
    for rank, lines in (("1", 0), ("0", 1)):
        monkeypatch.setenv("RANK", rank)
        assert main(["train", str(recipe), "--out", str(tmp / "ddp"), "--no-progress"]) == 130
        assert capsys.readouterr().err.count("attnlab: interrupted") == lines


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c(setup, sig):
    """A scheduler's SIGTERM or a closed terminal's SIGHUP before the first checkpoint: exit
    128 + signal, one line, and no directory left to block a rerun (a real process)."""
    tmp, recipe = setup
    env = {**os.environ, "ATTNLAB_HOME": str(tmp / "home"), "OMP_NUM_THREADS": "1"}
    run = tmp / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab", "train", str(recipe), "--out", str(run),
         "--no-progress", "--set", "train.checkpoint_interval=100000", "--set",
         "train.max_steps=100000", "--set", "train.eval_interval=100000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:  # "precision ..." is printed just before the first step
        if line.startswith("precision"):
            break
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert err.count("\n") == 1 and f"stopped by {sig.name}" in err and "left nothing" in err
    assert not run.exists()


def test_resume_refuses_another_model_and_missing_checkpoints(setup, capsys):
    tmp, recipe = setup
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    before = (run / "last" / "model.safetensors").read_bytes()
    refused(capsys, ["train", str(recipe), "--resume", "--out", str(run), "--set",
                     "model.d_model=64"],
            "holds another model: model.d_model is 32 there, 64 here")
    refused(capsys, ["train", "--resume", "--out", str(run)], "already at step 8 of 8")
    assert (run / "last" / "model.safetensors").read_bytes() == before
    assert main(["train", "--resume", "--out", str(run), "--max-steps", "10",
                 "--no-progress"]) == 0
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 10
    # a truncated weights file is a clear error for every command that reads it
    data = (run / "best" / "model.safetensors").read_bytes()
    (run / "best" / "model.safetensors").write_bytes(data[: len(data) // 3])
    refused(capsys, ["eval", str(run)], "truncated or corrupt")
    refused(capsys, ["eval", str(tmp)], "nor an attnlab run directory")
    refused(capsys, ["eval", str(run), "--tokens", "5", "--context", "8"],
            "--tokens, --context: for pretrained models")  # not silently ignored
    # a last/ checkpoint that lost its RNG states (or its optimizer state) is not resumed
    # inexactly: one line, and the checkpoint stays as it was
    from safetensors.torch import load_file, save_file

    saved = run / "last" / "optimizer.safetensors"
    tensors = load_file(saved)
    save_file({k: v for k, v in tensors.items() if not k.startswith("rng.")}, str(saved))
    weights = (run / "last" / "model.safetensors").read_bytes()
    refused(capsys, ["train", "--resume", "--out", str(run), "--max-steps", "12"],
            "holds no usable RNG state")
    saved.unlink()
    refused(capsys, ["train", "--resume", "--out", str(run), "--max-steps", "12"],
            "holds no optimizer state")
    assert json.loads((run / "last" / "trainer.json").read_text())["step"] == 10
    assert (run / "last" / "model.safetensors").read_bytes() == weights
    # a run's config.json that is JSON but not a config names the file
    (run / "config.json").write_text("[]")
    refused(capsys, ["train", "--resume", "--out", str(run)],
            "config.json: a run config is a mapping of sections")
    refused(capsys, ["eval", str(run)], "config.json is not a JSON object")


def test_generate_command_streams_what_the_library_generates(setup, monkeypatch, capsys):
    import attnlab.generate
    from attnlab.generate import generate_text
    from attnlab.tasks.run import load_run

    tmp, recipe = setup
    env = {**os.environ, "ATTNLAB_HOME": str(tmp / "home")}
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    args = ["generate", str(run), "--prompt", "to be", "--max-new-tokens", "25",
            "--temperature", "0"]
    streamed = cli(*args, env=env)
    whole = cli(*args, "--no-stream", env=env)
    assert streamed.returncode == whole.returncode == 0, streamed.stderr
    model, tokenizer, _ = load_run(run)
    expected = "to be" + generate_text(model, tokenizer, "to be", max_new_tokens=25,
                                       temperature=0.0)
    assert streamed.stdout == whole.stdout == expected + "\n"
    continuation = expected[len("to be"):]
    stop = continuation[3:6]
    cut = cli(*args, "--stop", stop, env=env)
    assert cut.stdout == "to be" + continuation[: continuation.find(stop)] + "\n"
    too_long = cli("generate", str(run), "--prompt", "x" * 40, env=env)
    assert too_long.returncode == 2 and too_long.stdout == ""
    assert "context is 32" in too_long.stderr
    # A shell-typed \n in --stop is a newline; a zero repetition penalty is refused, not 1.0.
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp / "home"))
    assert main(["generate", str(run), "--prompt", "to be", "--repetition-penalty", "0"]) == 2
    assert "repetition_penalty must be > 0" in capsys.readouterr().err
    seen = {}
    monkeypatch.setattr(attnlab.generate, "generate_text",
                        lambda *a, **options: seen.update(options) or "")
    assert main(["generate", str(run), "--prompt", "to be", "--stop", "\\n\\n",
                 "--stop", "\\tx", "--no-stream"]) == 0
    assert seen["stop"] == ("\n\n", "\tx") and seen["repetition_penalty"] == 1.0


def test_run_config_difference_ignores_what_the_data_filled_in_unless_asked():
    from attnlab.tasks.config import load_run_config
    from attnlab.tasks.run import run_config_difference

    stored = load_run_config("gpt-char", ["model.vocab_size=67"])  # as a run's data fill it
    assert run_config_difference(stored, load_run_config("gpt-char")) is None
    assert (run_config_difference(stored, load_run_config("gpt-char", ["model.vocab_size=70"]))
            == "model.vocab_size is 67 there, 70 here")
    assert (run_config_difference(stored, load_run_config("gpt-char", ["model.n_layers=9"]))
            == f"model.n_layers is {stored.model.n_layers} there, 9 here")
    lr = load_run_config("gpt-char", ["train.lr=0.5"])
    assert run_config_difference(stored, lr) is None  # train is not compared by default ...
    assert (run_config_difference(stored, lr, ("model", "data", "train"))  # ... unless asked
            == f"train.lr is {stored.train.lr} there, 0.5 here")


def test_a_refused_resume_names_the_field_that_was_typed():
    """A ViT's max_len follows its patch_size: the message names patch_size, not max_len."""
    from attnlab.tasks.config import load_run_config
    from attnlab.tasks.run import run_config_difference

    stored = load_run_config("vit-digits", ["model.patch_size=2"])
    asked = load_run_config("vit-digits", ["model.patch_size=4"])
    assert stored.model.max_len != asked.model.max_len  # derived, and sorted before it
    assert run_config_difference(stored, asked).startswith("model.patch_size is 2 there, 4")
