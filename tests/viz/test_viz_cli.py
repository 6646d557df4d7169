"""`attnlab viz` end to end on a tiny trained run: PNG grid, enlarged head, HTML head view, and
every kind of bad input as one line and exit status 2 with nothing overwritten."""

import json
import shutil

import matplotlib.image as mpimg
import pytest
import torch
import yaml

from attnlab.cli import main
from attnlab.tasks.run import load_run
from attnlab.viz.capture import capture_attention

TEXT = "to be the king"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vizrun")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTNLAB_HOME", str(tmp / "home"))
    corpus = tmp / "corpus.txt"
    corpus.write_text("".join(f"{w} the {v}\n" for w in ("to be", "or not", "a rose")
                              for v in ("king", "queen", "fool") for _ in range(20)))
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"d_model": 32, "n_heads": 2, "n_layers": 2, "max_len": 32,
                  "attention": "local", "attention_options": {"window": 4}},
        "data": {"tokenizer": "char", "source": str(corpus)},
        "train": {"max_steps": 2, "batch_size": 4, "eval_interval": 2, "eval_batches": 1,
                  "checkpoint_interval": 2, "log_interval": 1, "sample_tokens": 0,
                  "precision": "fp32", "warmup_steps": 1},
    }))
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--no-progress"]) == 0
    yield run
    mp.undo()


def test_png_grid_and_enlarged_head(run_dir, tmp_path, capsys):
    out = tmp_path / "map.png"
    assert main(["viz", str(run_dir), "--text", TEXT, "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    grid = mpimg.imread(out)
    assert grid.shape[0] > 200 and grid.shape[1] > 300
    one = tmp_path / "head.png"
    assert main(["viz", str(run_dir), "--text", TEXT, "--out", str(one), "--layer", "1",
                 "--head", "1"]) == 0
    assert mpimg.imread(one).shape[1] > 1000  # the enlarged head with its pattern beside


def test_html_head_view_holds_the_captured_attention(run_dir, tmp_path):
    out = tmp_path / "view.html"
    assert main(["viz", str(run_dir), "--text", TEXT, "--out", str(out), "--layer", "1",
                 "--head", "0", "--per-query", "2"]) == 0
    page = out.read_text()
    data = json.loads(page.split('id="attn-data">')[1].split("</script>")[0])
    assert data["tokens"]["src"] == [c if c != " " else "\u2423" for c in TEXT]
    assert data["initial"] == {"layer": 1, "head": 0}
    # the drawn links are the 2 strongest keys of every query in the model's own attention
    model, tok, _ = load_run(run_dir)
    with torch.no_grad(), capture_attention(model) as cap:
        model(torch.tensor([tok.encode(TEXT)]))
    w = cap.records[1].weights[0, 0]
    head = data["layers"][1]["heads"][0]
    for q in range(len(TEXT)):
        drawn = sorted(k for qq, k in zip(head["q"], head["k"], strict=True) if qq == q)
        assert drawn == sorted(w[q].topk(min(2, q + 1)).indices.tolist())
    assert data["layers"][1]["mechanism"] == "local"


def _fails(capsys, *args):
    assert main(["viz", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnlab: error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, capsys):
    out = tmp_path / "map.png"  # none of the refusals below may create it
    run = str(run_dir)
    mine = tmp_path / "mine.png"
    mine.write_text("keep me")
    assert "exists; give another name, or --force" in _fails(
        capsys, run, "--text", TEXT, "--out", str(mine))
    assert "is a folder" in _fails(capsys, run, "--text-file", str(tmp_path), "--out", str(out))
    assert "--per-query: for the head view" in _fails(capsys, run, "--text", TEXT, "--out",
                                                      str(out), "--per-query", "3")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    assert "cannot read" in _fails(capsys, run, "--text-file", str(latin1), "--out", str(out))
    assert "longer than the model's context of 32" in _fails(
        capsys, run, "--text", "x" * 40, "--out", str(out))
    assert "out of range" in _fails(capsys, run, "--text", TEXT, "--out", str(out),
                                    "--layer", "2")
    assert "out of range" in _fails(capsys, run, "--text", TEXT, "--out", str(out),
                                    "--layer", "0", "--head", "2")
    assert "--head needs --layer" in _fails(capsys, run, "--text", TEXT, "--out", str(out),
                                            "--head", "0")
    assert "does not exist" in _fails(capsys, run, "--text", TEXT, "--out",
                                      str(tmp_path / "missing" / "map.png"))
    assert ".png" in _fails(capsys, run, "--text", TEXT, "--out", str(tmp_path / "map.jpg"))
    assert "empty" in _fails(capsys, run, "--text", "", "--out", str(out))
    assert "--text" in _fails(capsys, run, "--out", str(out))
    assert "--target" in _fails(capsys, run, "--text", TEXT, "--target", "x", "--out", str(out))
    empty = tmp_path / "noweights"
    empty.mkdir()
    for name in ("config.json", "tokenizer.json"):
        shutil.copy(run_dir / name, empty / name)
    assert "no weights" in _fails(capsys, str(empty), "--text", TEXT, "--out", str(out))
    assert not out.exists() and not (tmp_path / "missing").exists()
    assert mine.read_text() == "keep me"  # nothing of the user's overwritten, unless asked
    assert main(["viz", run, "--text", TEXT, "--out", str(mine), "--force"]) == 0
    assert mine.read_bytes().startswith(b"\x89PNG")


def test_render_encoder_decoder_with_cross_attention_selected(tmp_path):
    from attnlab.errors import AttnlabError
    from attnlab.models import EncoderDecoder
    from attnlab.models.config import Seq2SeqConfig
    from attnlab.viz.view import render_attention

    torch.manual_seed(0)
    model = EncoderDecoder(Seq2SeqConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1,
                                         max_len=12))
    src, tgt = list(range(1, 9)), [0, 5, 6]
    out = render_attention(model, src, tmp_path / "s2s.html", labels=[f"s{i}" for i in src],
                           target_ids=tgt, target_labels=["<bos>", "a", "b"], layer=2)
    data = json.loads(out.read_text().split('id="attn-data">')[1].split("</script>")[0])
    layer = data["layers"][2]
    assert layer["kind"] == "cross" and (layer["q"], layer["k"]) == ("tgt", "src")
    assert data["initial"] == {"layer": 2, "head": None}
    assert data["tokens"]["tgt"] == ["<bos>", "a", "b"]
    with pytest.raises(AttnlabError, match="target is 13 tokens"):
        render_attention(model, src, tmp_path / "x.html", labels=[str(i) for i in src],
                         target_ids=[0] * 13, target_labels=["x"] * 13)
    assert not (tmp_path / "x.html").exists()
