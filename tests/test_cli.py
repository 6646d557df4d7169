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
    (["modle"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, message):
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len([ln for ln in result.stderr.splitlines() if "error" in ln]) == 1


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
