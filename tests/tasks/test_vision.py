import json

import pytest
import torch

from attnlab.cli import main
from attnlab.tasks.vision import augment


def test_augment_shifts_each_image_by_its_own_offset_and_mirrors():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    g = torch.Generator().manual_seed(3)
    offsets = torch.randint(-1, 2, (2, 2), generator=torch.Generator().manual_seed(3))
    out = augment(images, g, shift=1, flip=False, fill=-1.0)
    for i in range(2):
        dy, dx = int(offsets[0, i]), int(offsets[1, i])
        expected = torch.full((4, 4), -1.0)
        for r in range(4):
            for c in range(4):
                if 0 <= r - dy < 4 and 0 <= c - dx < 4:
                    expected[r, c] = images[i, 0, r - dy, c - dx]
        assert torch.equal(out[i, 0], expected), (i, dy, dx)
    flipped = augment(images, torch.Generator().manual_seed(0), shift=0, flip=True, fill=0.0)
    for i in range(2):
        want = images[i].flip(-1) if _mirrored(i) else images[i]
        assert torch.equal(flipped[i], want)


def _mirrored(i: int) -> bool:
    g = torch.Generator().manual_seed(0)
    torch.randint(0, 1, (2, 2), generator=g)  # augment draws the offsets first
    return bool((torch.rand(2, generator=g) < 0.5)[i])


def test_vit_digits_trains_and_evaluates_from_the_command_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ATTNLAB_HOME", str(tmp_path / "home"))
    run = tmp_path / "run"
    sets = ["model.d_model=16", "model.n_heads=2", "model.n_layers=1", "train.max_steps=4",
            "train.eval_interval=2", "train.checkpoint_interval=2", "train.log_interval=1"]
    args = ["train", "vit-digits", "--out", str(run), "--no-progress"]
    assert main(args + [x for s in sets for x in ("--set", s)]) == 0
    out = capsys.readouterr().out
    assert "validation accuracy" in out and "majority class" in out
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model"]["image_size"] == 8 and cfg["model"]["num_classes"] == 10
    assert main(["eval", str(run), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["test_images"] == 360 and 0.0 <= m["test_accuracy"] <= 1.0
    assert m["majority_accuracy"] == pytest.approx(18 / 180, abs=0.02)
    bad = ["train", "vit-digits", "--out", str(tmp_path / "r2"), "--set", "model.patch_size=3"]
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["attnlab: error: image size 8x8 is not divisible by the patch size 3; resize "
                   "the images or pick a patch size that divides both sides"]
