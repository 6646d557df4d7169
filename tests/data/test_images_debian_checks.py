"""Fashion-MNIST's labels are range-checked and it trains with its
documented augmentation (2-pixel shifts, mirroring) while digits trains without; apt failures
while fetching a pinned package are one clear error."""

import subprocess

import numpy as np
import pytest

from attnlab.data import debian, images
from attnlab.data.debian import DebianPackage, fetch_deb
from attnlab.data.images import load_digits_data, load_fashion_mnist, read_idx
from attnlab.errors import AttnlabError
from tests.data.test_images import fake_fashion, write_idx


def test_fashion_augments_digits_does_not(tmp_path):
    fm = load_fashion_mnist(fake_fashion(tmp_path / "fm"), n_val=2)
    assert (fm.shift, fm.flip) == (2, True)
    d = load_digits_data()
    assert (d.shift, d.flip) == (0, False)


def test_fashion_labels_beyond_the_ten_classes_are_refused(tmp_path):
    folder = fake_fashion(tmp_path / "fm")
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
                                                               10, 1]))
    with pytest.raises(AttnlabError, match="train labels exceed 9"):
        load_fashion_mnist(folder, n_val=2)


def _no_apt_cache(monkeypatch):
    monkeypatch.setattr(debian, "_need", lambda tool, item: "apt-get")


def test_apt_failing_is_one_line_naming_its_last_error(monkeypatch, _attnlab_home):
    _no_apt_cache(monkeypatch)

    def failing(cmd, **kw):
        return subprocess.CompletedProcess(cmd, 100, "", "W: a warning\nE: Unable to locate "
                                                         "package nosuch\n")

    monkeypatch.setattr(debian.subprocess, "run", failing)
    with pytest.raises(AttnlabError, match=r"apt-get could not fetch Debian package nosuch=1: "
                                           r"E: Unable to locate package nosuch; put"):
        fetch_deb(DebianPackage("nosuch", "1", "0" * 64), quiet=True)


def test_apt_saving_nothing_is_a_clear_error(monkeypatch, _attnlab_home):
    _no_apt_cache(monkeypatch)
    monkeypatch.setattr(debian, "_run", lambda cmd, item, cwd=None: None)  # "succeeds", no file
    with pytest.raises(AttnlabError, match=r"apt saved no \.deb for Debian package x=1"):
        fetch_deb(DebianPackage("x", "1", "0" * 64), quiet=True)


@pytest.mark.parametrize("n_val", [0, 12, -1])
def test_fashion_n_val_outside_the_training_set_is_refused(tmp_path, n_val):
    # n_val = 0 would make x[:-0] an empty training split
    with pytest.raises(AttnlabError, match=r"n_val must be in \(0, 12\)"):
        load_fashion_mnist(fake_fashion(tmp_path / "fm"), n_val=n_val)


def test_a_truncated_idx_header_is_one_clear_error(tmp_path):
    (tmp_path / "cut").write_bytes(b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00")  # 3 dims, 1.5 given
    with pytest.raises(AttnlabError, match="IDX header is truncated"):
        read_idx(tmp_path / "cut")


def test_the_unpacked_fashion_package_is_reused(monkeypatch, _attnlab_home):
    calls = []

    def fake_unpack(deb, dest):
        calls.append(deb)
        fake_fashion(dest / images._FASHION_DIR)
        return dest

    monkeypatch.setattr(images, "fetch_deb", lambda pkg: "the.deb")
    monkeypatch.setattr(images, "unpack_deb", fake_unpack)
    first = images.fashion_mnist_folder()
    assert images.fashion_mnist_folder() == first and calls == ["the.deb"]


def _task(tmp_path):
    import torch

    from attnlab.tasks.vision import ImageClassification

    data = load_fashion_mnist(fake_fashion(tmp_path / "fm", n_train=40, n_test=6), n_val=8)
    return ImageClassification(torch.nn.Flatten(), data), data


def test_evaluation_sees_the_images_unaugmented(tmp_path):
    task, data = _task(tmp_path)  # fashion: shift 2 and flip in training
    for split in ("val", "test"):
        got = task.predict(task.model, split).numpy()
        np.testing.assert_array_equal(got, data.images[split].reshape(len(got), -1))


def test_training_shifts_fill_with_the_standardized_black_level(tmp_path):
    import torch

    task, data = _task(tmp_path)
    x, _ = task.train_batch(torch.Generator().manual_seed(0), 64, slice(None))
    pixels = {float(v) for v in data.images["train"].ravel()}
    border = {float(v) for v in x.ravel()} - pixels  # values no training image holds
    assert not border  # shifted-in pixels are the background, itself a training pixel value
    assert data.background in {float(v) for v in x.ravel()}


def test_a_damaged_gzip_idx_file_is_one_clear_error(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"\x1f\x8b" + b"not really gzip data" * 3)
    with pytest.raises(AttnlabError, match="cannot read IDX file"):
        read_idx(tmp_path / "bad.gz")
