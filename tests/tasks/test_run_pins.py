"""A data folder's pin covers its files' names as well as their bytes: the folder's text is its
files in name order, so swapping two files' names changes what a run trains on, and must
change the sha256 a run is pinned by."""

import hashlib

from attnlab.tasks.run import _source_sha256
from tests.tasks.test_train_cli import setup  # noqa: F401  (the fixture)


def test_a_folder_pin_changes_when_files_swap_names_or_move(tmp_path):
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first text\n")
    (folder / "b.txt").write_text("second text\n")
    pinned = _source_sha256(str(folder))
    assert pinned == _source_sha256(str(folder))
    (folder / "a.txt").rename(folder / "c.txt")
    (folder / "b.txt").rename(folder / "a.txt")
    (folder / "c.txt").rename(folder / "b.txt")  # the same bytes, in the other order
    swapped = _source_sha256(str(folder))
    assert swapped != pinned
    (folder / "b.txt").rename(folder / "sub" / "b.txt")
    assert _source_sha256(str(folder)) not in (pinned, swapped)
    single = tmp_path / "one.txt"
    single.write_bytes(b"bytes\n")
    assert _source_sha256(str(single)) == hashlib.sha256(b"bytes\n").hexdigest()
    assert _source_sha256("shakespeare") is None  # a named data set pins itself


def test_a_loaded_run_is_in_eval_mode_so_its_metrics_are_repeatable(setup):  # noqa: F811
    from attnlab.cli import main
    from attnlab.tasks.run import evaluate_run, load_run

    tmp, recipe = setup  # its model has dropout 0.1
    run = tmp / "run"
    assert main(["train", str(recipe), "--out", str(run), "--max-steps", "2",
                 "--no-progress"]) == 0
    model, _, cfg = load_run(run)
    assert cfg.model.dropout > 0 and not model.training
    assert evaluate_run(run, batches=1) == evaluate_run(run, batches=1)
