"""Every flag of `generate` and `bench attention` reaches the library
call it configures, and the defaults the help text promises are the ones passed."""

import shutil

import pytest
import torch

import attnlab.cli as cli
import attnlab.generate
from attnlab.bench import attention as lab
from attnlab.cli import main


@pytest.fixture
def lm_run(tmp_path):
    """A tiny attnlab LM run directory (no training: the weights are what they are)."""
    from attnlab.data import train_tokenizer
    from attnlab.interop import save_attnlab_folder
    from attnlab.models import GPT, GPTConfig

    tok = train_tokenizer("char", "to be or not to be\n")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=16, n_heads=2, n_layers=1,
                          max_len=32))
    run = tmp_path / "run"
    save_attnlab_folder(model, run, tokenizer=tok)
    shutil.copytree(run / "best", run / "last")
    return run


def _spy_generate(monkeypatch):
    seen = {}

    def fake(model, tokenizer, prompt, **options):
        seen.update(options, prompt=prompt)
        return ""

    monkeypatch.setattr(attnlab.generate, "generate_text", fake)
    loaded = {}
    real = cli.load_lm

    def load(source, checkpoint="best", command="generate"):
        loaded["checkpoint"] = checkpoint
        return real(source, checkpoint, command)

    monkeypatch.setattr(cli, "load_lm", load)
    return seen, loaded


def test_generate_sampling_flags_reach_generate_text(lm_run, monkeypatch):
    seen, loaded = _spy_generate(monkeypatch)
    assert main(["generate", str(lm_run), "--prompt", "to", "--temperature", "0.5",
                 "--top-k", "5", "--top-p", "0.9", "--repetition-penalty", "1.3",
                 "--seed", "7", "--max-new-tokens", "9", "--checkpoint", "last",
                 "--no-stream"]) == 0
    assert seen["prompt"] == "to"
    assert (seen["temperature"], seen["top_k"], seen["top_p"]) == (0.5, 5, 0.9)
    assert (seen["repetition_penalty"], seen["seed"], seen["max_new_tokens"]) == (1.3, 7, 9)
    assert loaded["checkpoint"] == "last"


def test_generate_defaults_are_the_documented_ones(lm_run, monkeypatch):
    seen, loaded = _spy_generate(monkeypatch)
    assert main(["generate", str(lm_run), "--prompt", "to", "--no-stream"]) == 0
    assert (seen["temperature"], seen["max_new_tokens"], seen["repetition_penalty"]) == (
        0.8, 200, 1.0)
    assert seen["top_k"] is None and seen["top_p"] is None and seen["seed"] is None
    assert loaded["checkpoint"] == "best"


def _fake_results(series, lengths, **kw):
    return {"mode": kw["mode"], "causal": kw["causal"], "lengths": lengths,
            "series": {s: {"points": [{"n": n, "seconds": 1e-3, "peak_mib": 1.0}
                                      for n in lengths],
                           "stopped": None, "time_exponent": 1.0, "memory_exponent": 1.0}
                       for s in series}}


def test_bench_flags_reach_the_lab(monkeypatch, capsys):
    seen = {}

    def fake_run(series, lengths, **kw):
        seen.update(kw, series=series, lengths=lengths)
        return _fake_results(series, lengths, **kw)

    monkeypatch.setattr(lab, "run", fake_run)
    assert main(["bench", "attention", "--mechanisms", "local, full", "--lengths", "64,128",
                 "--mode", "fwd+bwd", "--causal", "--time-budget", "2.5",
                 "--memory-budget", "300", "--no-progress"]) == 0
    assert seen["series"] == ["local", "full"] and seen["lengths"] == [64, 128]
    assert seen["mode"] == "fwd+bwd" and seen["causal"] is True
    assert seen["time_budget"] == 2.5 and seen["memory_budget_mib"] == 300
    assert seen["progress"] is False
    assert "mode fwd+bwd, causal True" in capsys.readouterr().out
    # the defaults: every available series, the documented budgets, forward, not causal
    seen.clear()
    assert main(["bench", "attention", "--lengths", "64"]) == 0
    assert seen["series"] == lab.available_series()
    assert (seen["mode"], seen["causal"], seen["time_budget"], seen["memory_budget_mib"],
            seen["progress"]) == ("fwd", False, 30.0, 8192, True)


def test_measure_point_passes_the_whole_spec_to_the_fresh_process(monkeypatch):
    import json
    import subprocess

    seen = {}

    class Done:
        returncode, stderr = 0, ""
        stdout = json.dumps({"seconds": 0.5, "peak_mib": 1.0}) + "\n"

    def fake(argv, **kw):
        seen["spec"] = json.loads(argv[-1])
        return Done()

    monkeypatch.setattr(subprocess, "run", fake)
    r = lab.measure_point("linformer", 512, mode="fwd+bwd", causal=True, time_budget=1.0,
                          memory_budget_mib=77)
    spec = seen["spec"]
    assert spec["mechanism"] == "linformer" and spec["n"] == 512
    assert spec["options"] == {"seq_len": 512, "k": 256}
    assert spec["options_small"] == {"seq_len": 128, "k": 128}
    assert (spec["mode"], spec["causal"], spec["memory_budget_mib"]) == ("fwd+bwd", True, 77)
    assert r == {"seconds": 0.5, "peak_mib": 1.0}
    # a point slower than the budget is an error, not a number
    assert lab.measure_point("full", 64, mode="fwd", causal=False, time_budget=0.25,
                             memory_budget_mib=77)["error"] == "over the time budget"


def test_a_point_calls_the_mechanism_as_asked(monkeypatch):
    """`bench.point.measure` (in process): the mechanism gets `causal`, fwd+bwd runs a
    backward pass, and the measured call is at length n with the options for n (linformer's
    warm-up runs with the small options only)."""
    import attnlab.attention as attention
    from attnlab.bench import point

    calls, built = [], []
    real_build = attention.build

    def build(name, **options):
        mech = real_build(name, **options)
        built.append(options)
        inner = mech.forward

        def forward(q, k, v, **kw):
            calls.append((q.shape[-2], kw.get("causal"), q.requires_grad))
            return inner(q, k, v, **kw)

        mech.forward = forward
        return mech

    monkeypatch.setattr(attention, "build", build)
    spec = {"mechanism": "linformer", "options": {"seq_len": 256, "k": 16},
            "options_small": {"seq_len": 128, "k": 16}, "n": 256, "mode": "fwd+bwd",
            "causal": False, "heads": 2, "head_dim": 8, "repeats": 1}
    r = point.measure(spec)
    assert r["seconds"] > 0 and r["peak_mib"] >= 0
    assert built == [{"seq_len": 256, "k": 16}, {"seq_len": 128, "k": 16}]
    assert calls[0] == (128, False, True)  # the warm-up, small
    assert all(c == (256, False, True) for c in calls[1:]) and len(calls) >= 2
    calls.clear()
    point.measure({"mechanism": "local", "options": {"window": 4}, "n": 64, "mode": "fwd",
                   "causal": True, "heads": 2, "head_dim": 8, "repeats": 1})
    assert calls and all(causal is True and not grad for _, causal, grad in calls)


def test_peak_memory_is_the_extra_memory_of_the_call():
    """Eager full attention at n = 1024 with 8 heads holds 8 x 1024^2 fp32 scores (32 MiB):
    the point reports about that, not the process's whole resident size (torch alone is
    several hundred MiB)."""
    r = lab.measure_point("full-eager", 1024, mode="fwd", causal=False, time_budget=20,
                          memory_budget_mib=2048)
    assert "error" not in r, r
    assert 24 <= r["peak_mib"] < 200, r


def test_eval_flags_reach_evaluate_run(lm_run, monkeypatch, capsys):
    import attnlab.tasks.run as run_mod

    seen = {}

    def fake(source, **kw):
        seen.update(kw, source=source)
        return {"val_loss": 1.0, "perplexity": 2.718, "bits_per_char": 1.44,
                "unigram_loss": 2.0}

    monkeypatch.setattr(run_mod, "evaluate_run", fake)
    assert main(["eval", str(lm_run), "--batches", "3", "--checkpoint", "last",
                 "--attention", "local", "--option", "window=4"]) == 0
    assert seen == {"source": lm_run, "checkpoint": "last", "batches": 3,
                    "attention": "local", "options": {"window": 4}}
    assert capsys.readouterr().out.startswith("validation loss 1.0000  perplexity 2.72")
    assert main(["eval", str(lm_run)]) == 0
    assert (seen["checkpoint"], seen["batches"], seen["attention"], seen["options"]) == (
        "best", None, None, {})


def test_viz_reads_the_checkpoint_asked_for(lm_run, monkeypatch, tmp_path, capsys):
    import attnlab.tasks.run as run_mod

    asked = []
    real = run_mod.load_run
    monkeypatch.setattr(run_mod, "load_run",
                        lambda path, checkpoint="best": asked.append(checkpoint) or
                        real(path, checkpoint=checkpoint))
    out = tmp_path / "v.html"
    assert main(["viz", str(lm_run), "--text", "to be", "--out", str(out),
                 "--checkpoint", "last"]) == 0
    assert asked == ["last"] and capsys.readouterr().out.strip() == str(out)


def test_plot_redraws_the_runs_own_loss_png_by_default(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(
        "\n".join(json.dumps({"step": s, "loss": 3.0 / s, "lr": 1e-3}) for s in (1, 2, 3)))
    assert main(["plot", str(run)]) == 0
    assert capsys.readouterr().out.strip() == str(run / "loss.png")
    assert (run / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in run.iterdir()) == ["loss.png", "metrics.jsonl"]


def test_icl_flags_reach_the_library(lm_run, monkeypatch, tmp_path, capsys):
    import attnlab.tasks.icl as icl
    from attnlab.errors import AttnlabError

    seen, loaded = {}, {}
    real_load = cli.load_lm

    def load(source, checkpoint="best", command="generate"):
        loaded.update(checkpoint=checkpoint, command=command)
        return real_load(source, checkpoint, command)

    def labelled(data, labels, **kw):
        seen["load"] = (data, labels, kw)
        return "DATA"

    def accuracy(model, tokenizer, data, **kw):
        seen["accuracy"] = (data, kw)
        raise AttnlabError("spied")  # the table is not this test's business

    monkeypatch.setattr(cli, "load_lm", load)
    monkeypatch.setattr(icl, "load_labelled", labelled)
    monkeypatch.setattr(icl, "icl_accuracy", accuracy)
    assert main(["icl", str(lm_run), "--data", "toy.jsonl", "--template", "{text}:{label}",
                 "--labels", "a,b", "--separator", "\\t", "--shots", "0,3", "--draws", "4",
                 "--limit", "9", "--seed", "5", "--multi-token", "--checkpoint", "last",
                 "--no-progress"]) == 2
    assert "spied" in capsys.readouterr().err
    assert seen["load"] == ("toy.jsonl", ["a", "b"], {"limit": 9, "seed": 5})
    data, kw = seen["accuracy"]
    assert data == "DATA" and loaded == {"checkpoint": "last", "command": "icl"}
    assert (kw["template"], kw["label_words"], kw["separator"]) == ("{text}:{label}",
                                                                     ["a", "b"], "\t")
    assert (kw["shots"], kw["draws"], kw["seed"], kw["multi_token"], kw["progress"]) == (
        (0, 3), 4, 5, True, False)


def test_predict_reads_the_checkpoint_asked_for(lm_run, monkeypatch, capsys):
    import attnlab.tasks.run as run_mod

    seen = {}

    def fake(source, texts, **kw):
        seen.update(kw, source=source, texts=texts)
        return [{"label": "pos", "probability": 0.75, "text": t} for t in texts]

    monkeypatch.setattr(run_mod, "predict_run", fake)
    assert main(["predict", str(lm_run), "--text", "a", "--text", "b", "--checkpoint",
                 "last"]) == 0
    assert seen == {"source": lm_run, "texts": ["a", "b"], "checkpoint": "last"}
    assert capsys.readouterr().out == "pos\t0.7500\ta\npos\t0.7500\tb\n"


def test_recipes_lists_every_recipe_with_its_task_data_and_steps(capsys):
    from attnlab.tasks.config import load_run_config, recipes

    assert main(["recipes"]) == 0
    rows = capsys.readouterr().out.splitlines()
    names = recipes()
    assert len(rows) == len(names) and names
    for name, row in zip(names, rows, strict=True):
        cfg = load_run_config(name)
        words = row.split()
        assert words[:3] == [name, cfg.task, cfg.data.source]
        assert row.endswith(f" {cfg.train.max_steps} steps")


def test_eval_of_a_pretrained_model_scores_1024_token_windows_by_default(tmp_path, monkeypatch,
                                                                        capsys):
    import json

    import attnlab.data
    import attnlab.tasks.lm as lm
    from attnlab.data import train_tokenizer
    from attnlab.models import GPT, GPTConfig

    tok = train_tokenizer("char", "abc \n")
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, d_model=8, n_heads=2, n_layers=1,
                          max_len=2048, positional="rope"))
    monkeypatch.setattr(cli, "load_lm", lambda source, checkpoint="best", command="": (model,
                                                                                       tok))
    monkeypatch.setattr(attnlab.data, "load_text", lambda name: ("abc " * 10, f"{name} (x)"))
    seen = []

    def held_out_loss(model, tokenizer, text, *, context, progress, **budget):
        seen.append((context, budget, progress))
        return {"val_loss": 1.0, "perplexity": 2.7, "bits_per_char": 1.0, "tokens": 4}

    monkeypatch.setattr(lm, "held_out_loss", held_out_loss)
    source = str(tmp_path / "m.gguf")
    assert main(["eval", source, "--json"]) == 0
    assert seen[-1] == (1024, {}, False)  # min(max_len, 1024); the library's token budget
    assert json.loads(capsys.readouterr().out)["data"] == "shakespeare"
    assert main(["eval", source, "--context", "2048", "--tokens", "99", "--data", "kjv"]) == 0
    assert seen[-1] == (2048, {"max_tokens": 99}, True)
    assert "held-out tokens of kjv" in capsys.readouterr().out
