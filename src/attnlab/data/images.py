"""Labelled image sets for the Vision Transformer: scikit-learn's 8x8 digits and Fashion-MNIST.

- `digits`: scikit-learn `load_digits()` (1,797 8x8 grey images, 17 levels), split by a fixed
  seed, stratified: 70% train, 10% validation, 20% test.
- `fashion-mnist`: Zalando's 28x28 grey clothing images (MIT licence) from the Debian package
  `dataset-fashion-mnist`, pinned by version and sha256 and fetched with apt into the cache
  (`attnlab.data.debian`); its IDX files are parsed here. The last 5,000 of the 60,000 training
  images are the validation split; the 10,000 test images are the official test set.

Pixels are scaled to [0, 1] and then standardized with the training split's mean and std.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlab.data.debian import DebianPackage, fetch_deb, unpack_deb
from attnlab.errors import AttnlabError, did_you_mean

FASHION_MNIST = DebianPackage(
    "dataset-fashion-mnist", "0.0~git20200523.55506a9-1",
    "39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0")
_FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")
#: seed of the digits split (not the run's seed: every run sees the same test images)
DIGITS_SPLIT_SEED = 0


@dataclass
class ImageData:
    """Images with one label each, in train / val / test splits.

    Attributes:
        name: the dataset's name.
        images: split -> (N, C, H, W) float32, standardized.
        labels: split -> (N,) int64 in [0, num_classes).
        classes: the name of each label.
        meta: where the data came from.
        shift: training augmentation: random shifts of up to this many pixels.
        flip: training augmentation: random left-right mirroring.
    """

    name: str
    images: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    classes: tuple[str, ...]
    meta: dict
    shift: int = 0
    flip: bool = False

    @property
    def background(self) -> float:
        """The standardized value of a black (0) pixel: what a shifted border is filled with."""
        return float(self.images["train"].min())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return self.images["train"].shape[-1]

    @property
    def channels(self) -> int:
        return self.images["train"].shape[1]

    def majority_accuracy(self, split: str = "test") -> float:
        """Accuracy of always answering the training set's most frequent label."""
        top = np.bincount(self.labels["train"], minlength=self.num_classes).argmax()
        return float((self.labels[split] == top).mean())


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (LeCun's MNIST format, gzipped or not) as a uint8 array of its shape.

    Header: two zero bytes, the type code (0x08 = unsigned byte, the only one MNIST-style
    sets use), the number of dimensions, then each dimension as a big-endian uint32.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise AttnlabError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise AttnlabError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise AttnlabError(f"{path}: IDX type code 0x{raw[2]:02x} is not unsigned bytes (0x08)")
    ndim = raw[3]
    if ndim < 1 or len(raw) < 4 + 4 * ndim:
        raise AttnlabError(f"{path}: IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = raw[4 + 4 * ndim:]
    if len(body) != int(np.prod(shape)):
        raise AttnlabError(f"{path}: IDX header says {shape} ({int(np.prod(shape))} bytes) but "
                           f"the file holds {len(body)}; it is truncated or damaged")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def _standardize(images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    mean, std = float(images["train"].mean()), float(images["train"].std())
    return {k: ((v - mean) / std).astype(np.float32) for k, v in images.items()}


def load_digits_data() -> ImageData:
    """scikit-learn's 8x8 digits, split 70/10/20 by a fixed seed, stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]  # (N, 1, 8, 8)
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    rest, test = train_test_split(idx, test_size=0.2, random_state=DIGITS_SPLIT_SEED,
                                  stratify=y)
    train, val = train_test_split(rest, test_size=0.125, random_state=DIGITS_SPLIT_SEED,
                                  stratify=y[rest])
    splits = {"train": train, "val": val, "test": test}
    return ImageData("digits", _standardize({k: x[v] for k, v in splits.items()}),
                     {k: y[v] for k, v in splits.items()}, tuple(str(i) for i in range(10)),
                     {"source": "scikit-learn load_digits", "split_seed": DIGITS_SPLIT_SEED})


def fashion_mnist_folder() -> Path:
    """The unpacked IDX files of the pinned package, fetched and unpacked on first use."""
    from attnlab.data.corpora import cache_dir

    dest = cache_dir() / f"fashion-mnist-{FASHION_MNIST.version}"
    folder = dest / _FASHION_DIR
    if not (folder / "t10k-labels-idx1-ubyte.gz").is_file():
        unpack_deb(fetch_deb(FASHION_MNIST), dest)
    return folder


def load_fashion_mnist(folder: Path | None = None, *, n_val: int = 5000) -> ImageData:
    """Fashion-MNIST: 55,000 train, 5,000 validation (the last training images), 10,000 test.

    Args:
        folder: a folder with the four IDX files (default: the pinned Debian package's).
        n_val: training images held out for validation.
    """
    folder = Path(folder) if folder is not None else fashion_mnist_folder()

    def pair(prefix: str) -> tuple[np.ndarray, np.ndarray]:
        x = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise AttnlabError(f"{folder}: {prefix} images {x.shape} and labels {y.shape} do "
                               f"not pair up")
        if y.size and int(y.max()) >= len(FASHION_CLASSES):
            raise AttnlabError(f"{folder}: {prefix} labels exceed {len(FASHION_CLASSES) - 1}")
        return (x.astype(np.float32) / 255.0)[:, None], y

    x, y = pair("train")
    if not 0 < n_val < len(y):
        raise AttnlabError(f"n_val must be in (0, {len(y)}), got {n_val}")
    xt, yt = pair("t10k")
    images = {"train": x[:-n_val], "val": x[-n_val:], "test": xt}
    labels = {"train": y[:-n_val], "val": y[-n_val:], "test": yt}
    return ImageData("fashion-mnist", _standardize(images), labels, FASHION_CLASSES,
                     {"source": FASHION_MNIST.source, "sha256": FASHION_MNIST.sha256},
                     shift=2, flip=True)


IMAGE_SETS = {"digits": load_digits_data, "fashion-mnist": load_fashion_mnist}


def load_images(name: str) -> ImageData:
    """A named image set (see `IMAGE_SETS`)."""
    if name not in IMAGE_SETS:
        raise AttnlabError(f"unknown image set '{name}'{did_you_mean(name, IMAGE_SETS)}; "
                           f"choose from: {', '.join(IMAGE_SETS)}")
    return IMAGE_SETS[name]()
