import json
import subprocess
import sys

import pytest

from attnlab.attention import available
from attnlab.cli import main
from attnlab.tasks.config import parse_overrides


def run(*args):
    return subprocess.run([sys.executable, "-m", "attnlab", *args], capture_output=True,
                          text=True, timeout=120)


def test_info_json_lists_the_registries(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["attention"]) == set(available())
    assert info["attention"]["full"]["exact"] is True
    assert "rope" in info["positional"] and "alibi" in info["positional"]
    assert info["models"] == ["encoder", "gpt", "seq2seq"]
    assert info["torch"].startswith("2.")


def test_model_reports_parameters_and_flops(capsys):
    assert main(["model", "gpt", "--set", "d_model=64", "--set", "attention=local",
                 "--set", "attention_options.window=8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["attention_options"] == {"window": 8}
    from attnlab.models import GPT, GPTConfig

    model = GPT(GPTConfig(d_model=64, attention="local", attention_options={"window": 8}))
    assert out["parameters"] == model.num_parameters()


def test_demo_runs_every_architecture_and_mechanism():
    result = run("demo")
    assert result.returncode == 0, result.stderr
    lines = [ln for ln in result.stdout.splitlines() if ln.strip().endswith("ok")]
    causal = sum(c.causal for c in available().values())
    assert len(lines) == len(available()) + 2 * causal


@pytest.mark.parametrize("args, message", [
    (["model", "gpt", "--set", "d_model=30"], "d_model 30 is not divisible by n_heads 4"),
    (["model", "gpt", "--set", "attention=lokal"], "did you mean 'local'"),
    (["model", "gpt", "--set", "positional=rop"], "did you mean 'rope'"),
    (["model", "gpt", "--set", "n_layer=3"], "did you mean 'n_layers'"),
    (["model", "gpt", "--set", "attention=local", "--set", "attention_options.window=0"],
     "window must be an integer >= 1"),
    (["model", "gpt", "--set", "n_kv_heads=3"], "n_kv_heads 3 must divide n_heads 4"),
    (["model", "gpt", "--set", "d_model=abc"], "d_model must be int"),
    (["model", "gpt", "--set", "novalue"], "--set takes key=value"),
    (["model", "gpt", "--seq-len", "0"], "expected an integer >= 1"),
    (["model", "gpt", "--set", "rope_theta=nan"], "rope_theta must be a finite number"),
    (["model", "gpt", "--set", "norm_eps=-1"], "norm_eps and rope_theta must be > 0"),
    (["model", "seq2seq", "--set", "n_decoder_layers=-1"], "n_decoder_layers must be >= 1"),
    (["modle"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, capsys):
    # In-process (a subprocess costs ~3 s of imports per case); argparse's own refusals exit.
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err, err
    assert err.count("\n") == 1 and "error" in err, err  # argparse's usage block too


@pytest.mark.parametrize("args, message", [
    (["model", "gpt", "--set", "attention=lokal"], "did you mean 'local'"),
    (["modle"], "invalid choice"),
])
def test_the_attnlab_process_refuses_bad_input_in_one_line_with_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2 and result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_yaml_and_json_configs_read_numbers_as_numbers(tmp_path):
    from attnlab.errors import AttnlabError
    from attnlab.tasks.config import load_run_config

    recipe = tmp_path / "r.yaml"
    # forms YAML 1.1 reads as strings: no dot, or an exponent without its sign
    recipe.write_text("train:\n  lr: 3e-4\n  min_lr: .5e-5\n  max_steps: 10\n"
                      "  max_minutes: 1.0e1\n")
    cfg = load_run_config(str(recipe))
    assert (cfg.train.lr, cfg.train.min_lr, cfg.train.max_steps, cfg.train.max_minutes) == (
        3e-4, 5e-6, 10, 10.0)
    saved = tmp_path / "config.json"  # a run's config.json replays as the run it describes
    saved.write_text(json.dumps(cfg.to_dict()))
    assert load_run_config(str(saved)) == cfg
    saved.write_text('{"train": {"lr": 3e-4,}}')
    with pytest.raises(AttnlabError, match=r"config\.json is not valid JSON at line 1"):
        load_run_config(str(saved))


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["a=1", "b=3e-4", "c=true", "d.e=x", "d.f=[1, 2]"]) == {
        "a": 1, "b": 3e-4, "c": True, "d": {"e": "x", "f": [1, 2]}}


def test_a_reader_that_leaves_early_gets_a_quiet_exit():
    """`attnlab recipes | head -1`: the broken pipe ends the command without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "attnlab", "recipes"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # before the command has written anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


def test_the_generate_module_is_not_shadowed_by_a_reexport():
    import attnlab
    import attnlab.generate

    assert attnlab.generate.generate_text is attnlab.generate_text
    assert callable(attnlab.generate.sample_next)


def test_output_files_are_checked_before_any_work_and_never_replaced_unasked(tmp_path, capsys):
    def refused(args, message):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

    mine = tmp_path / "mine.json"
    mine.write_text("keep me")
    # refused before the benchmark runs: an existing file, a suffix the writer cannot honour
    refused(["bench", "attention", "--lengths", "16", "--json", str(mine)],
            f"--json {mine} exists; give another name, or --force")
    refused(["bench", "attention", "--lengths", "16", "--plot", str(tmp_path / "b.txt")],
            "--plot must end in .png, got 'b.txt'")
    refused(["icl", "no-such-model", "--data", "x.jsonl", "--template", "{text} {label}",
             "--out", str(tmp_path / "same.png"), "--json", str(tmp_path / "same.png")],
            "--json must end in .json")
    refused(["icl", "no-such-model", "--data", "x.jsonl", "--template", "{text} {label}",
             "--out", str(tmp_path)], "is a folder")
    run = tmp_path / "run"  # plot: the run's own loss.png is redrawn, a named file is not
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-3}) for s in (1, 2, 3)))
    refused(["plot", str(run), "--out", str(tmp_path / "p.txt")], "--out must end in .png")
    (tmp_path / "p.png").write_text("keep me too")
    refused(["plot", str(run), "--out", str(tmp_path / "p.png")], "exists")
    assert main(["plot", str(run)]) == 0 and main(["plot", str(run)]) == 0
    assert main(["plot", str(run), "--out", str(tmp_path / "p.png"), "--force"]) == 0
    assert (tmp_path / "p.png").read_bytes().startswith(b"\x89PNG")
    assert mine.read_text() == "keep me" and not (tmp_path / "b.txt").exists()


def test_plot_refuses_damaged_metrics_but_ignores_a_torn_last_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    rows = [json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-3}) for s in (1, 2, 3)]
    metrics = run / "metrics.jsonl"
    metrics.write_text("\n".join(rows) + '\n{"step": 4, "lo')  # a run killed mid-write
    assert main(["plot", str(run)]) == 0
    for content, message in ((b"\xff\xfe junk", "not UTF-8"),
                             ("\n".join([rows[0], "{bad", rows[1]]), "line 2 is not JSON"),
                             (json.dumps({"step": "x", "loss": 1.0}), "no numeric step"),
                             (json.dumps({"step": 1, "loss": 1.0}), "has no lr"),
                             ("", "holds no metrics yet")):
        metrics.write_bytes(content if isinstance(content, bytes) else content.encode())
        capsys.readouterr()
        assert main(["plot", str(run)]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.parametrize("args, message", [
    (["bench", "attention", "--time-budget", "nan"], "expected a finite number > 0, got 'nan'"),
    (["bench", "attention", "--time-budget", "inf"], "expected a finite number > 0"),
    (["bench", "attention", "--memory-budget", "-5"], "expected a finite number > 0"),
    (["bench", "attention", "--mechanisms", ""], "--mechanisms is empty"),
    (["icl", "m", "--data", "x.jsonl", "--seed", "-1"], "expected an integer >= 0, got '-1'"),
    (["rl-data", "CartPole-v1", "--seed", "-1"], "expected an integer >= 0"),
    (["rl-data", "CartPole-v1", "--out", "x.safetensors", "--mix", "random=nan"],
     "must be a finite number"),
    (["rl-data", "CartPole-v1", "--out", "x.safetensors", "--mix", "random=1,random=1"],
     "names 'random' twice"),
])
def test_numbers_that_cannot_be_used_are_refused_up_front(args, message, capsys, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but if it were, not into the repo
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_a_model_too_large_to_allocate_is_one_line(capsys, monkeypatch):
    import attnlab.cli

    def refuse(*args, **kwargs):  # what torch's CPU allocator raises (a real ~100 TB request
        # would depend on the machine's overcommit policy)
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                           "can't allocate memory: you tried to allocate 102399999995904 bytes.")

    monkeypatch.setattr(attnlab.cli, "build_model", refuse)
    assert main(["model", "gpt", "--set", "d_model=99999999996"]) == 2
    err = capsys.readouterr().err
    assert "out of memory (102,399,999,995,904 bytes in one piece)" in err, err
    assert err.count("\n") == 1

    def bug(*args, **kwargs):
        raise RuntimeError("shape mismatch")  # any other RuntimeError is a bug: it propagates

    monkeypatch.setattr(attnlab.cli, "build_model", bug)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        main(["model", "gpt"])


def test_mistyped_data_set_names_get_the_nearest_name(capsys):
    """rl-data and icl took a typo for a new data set (asking for --out / --template)."""
    assert main(["rl-data", "hopper-mixd"]) == 2
    assert "(did you mean 'hopper-mixed'?)" in capsys.readouterr().err
    assert main(["icl", "no-such-model", "--data", "sentimnt"]) == 2
    err = capsys.readouterr().err
    assert err == "attnlab: error: no labelled set 'sentimnt' (did you mean 'sentiment'?)\n"
