import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from attnlab.cli import main
from attnlab.data import debian, images
from attnlab.data.images import (
    FASHION_MNIST,
    load_digits_data,
    load_fashion_mnist,
    load_images,
    read_idx,
)
from attnlab.errors import AttnlabError


def write_idx(path: Path, array: np.ndarray, *, compress: bool = True) -> Path:
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw += array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_idx_parser_reads_a_hand_made_file_gzipped_or_not(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        got = read_idx(write_idx(tmp_path / f"a{compress}", a, compress=compress))
        assert got.dtype == np.uint8 and np.array_equal(got, a)
    # the header by hand: magic 0x00000801, then the count, big-endian
    (tmp_path / "labels").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x03" + bytes([7, 0, 9]))
    assert read_idx(tmp_path / "labels").tolist() == [7, 0, 9]


def test_idx_parser_refuses_damaged_files(tmp_path):
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05" + bytes(3))
    with pytest.raises(AttnlabError, match=r"header says \(5,\).*holds 3"):
        read_idx(tmp_path / "short")
    (tmp_path / "magic").write_bytes(b"PK\x03\x04")
    with pytest.raises(AttnlabError, match="not an IDX file"):
        read_idx(tmp_path / "magic")
    (tmp_path / "float").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01" + bytes(4))
    with pytest.raises(AttnlabError, match="type code 0x0d is not unsigned bytes"):
        read_idx(tmp_path / "float")
    with pytest.raises(AttnlabError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing")


def fake_fashion(folder: Path, n_train=12, n_test=3) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 4, 4)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def test_fashion_mnist_splits_and_standardizes_the_idx_files(tmp_path):
    folder = fake_fashion(tmp_path / "fm")
    data = load_fashion_mnist(folder, n_val=2)
    assert {k: v.shape for k, v in data.images.items()} == {
        "train": (10, 1, 4, 4), "val": (2, 1, 4, 4), "test": (3, 1, 4, 4)}
    assert data.labels["val"].tolist() == [0, 1] and data.labels["test"].tolist() == [0, 1, 2]
    raw = read_idx(folder / "train-images-idx3-ubyte.gz").astype(np.float64) / 255
    mean, std = raw[:10].mean(), raw[:10].std()
    np.testing.assert_allclose(data.images["val"][:, 0], (raw[10:] - mean) / std, rtol=1e-5)
    assert data.background == pytest.approx(float(data.images["train"].min()))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    with pytest.raises(AttnlabError, match=r"t10k images \(3, 4, 4\) and labels \(4,\) do not"):
        load_fashion_mnist(folder, n_val=2)


def test_digits_split_is_fixed_disjoint_and_stratified():
    a, b = load_digits_data(), load_digits_data()
    sizes = {k: len(v) for k, v in a.labels.items()}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    for k in a.images:
        assert np.array_equal(a.images[k], b.images[k])
    rows = {k: {v.tobytes() for v in a.images[k]} for k in a.images}
    assert not rows["test"] & rows["train"] and not rows["val"] & rows["test"]
    assert np.bincount(a.labels["test"]).min() >= 35  # stratified: ~36 of each digit
    assert a.images["train"].mean() == pytest.approx(0.0, abs=1e-5)
    assert a.image_size == 8 and a.channels == 1 and a.num_classes == 10
    with pytest.raises(AttnlabError, match=r"unknown image set 'digit'.*did you mean 'digits'"):
        load_images("digit")


def test_a_fashion_package_whose_checksum_does_not_match_is_refused(tmp_path, monkeypatch,
                                                                     capsys):
    def fake_apt(cmd, item, cwd=None):  # apt "downloads" other bytes than the pinned ones
        (cwd / FASHION_MNIST.archive).write_bytes(b"not the pinned package")

    monkeypatch.setattr(debian, "_run", fake_apt)
    monkeypatch.setattr(debian, "_need", lambda tool, item: "apt-get")
    with pytest.raises(AttnlabError, match=r"checksum mismatch for Debian package "
                                           r"dataset-fashion-mnist=0\.0~git20200523\.55506a9-1"):
        images.fashion_mnist_folder()
    # through the command line: one line, exit status 2, nothing written
    out = tmp_path / "run"
    assert main(["train", "vit-fashion", "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    # progress goes to stderr (stdout may be a --json answer); the error is one line
    err = [line for line in err if not line.startswith("downloading ")]
    assert len(err) == 1 and "checksum mismatch" in err[0], err
    assert not out.exists() or not any(out.iterdir())
