"""Data sets: seeded 2-D toys, sklearn's 8×8 digits (offline, the default), and MNIST-family / CIFAR-10
through torchvision (online only).

Every image set is returned in [-1, 1], shape (N, C, H, W), with integer labels.
"""
from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path

import numpy as np
import torch

from .errors import CorruptFileError, UnknownNameError, unknown_name

__all__ = ["TOY_DATASETS", "make_toy", "load_digits", "DIGITS_TEST_FRACTION", "DIGITS_SPLIT_SEED", "read_idx",
           "load_mnist_family", "load_cifar10", "OfflineDatasetError", "to_unit_range", "to_image_range",
           "IMAGE_DATASETS", "DATASETS", "load_dataset"]

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


class OfflineDatasetError(RuntimeError):
    """A data set that must be downloaded could not be fetched."""


def _check_split(split, allowed):
    if split not in allowed:
        names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        raise UnknownNameError(f"split must be {names}, got {split!r}", given=split, allowed=allowed)


# ----------------------------------------------------------------------------- 2-D toys
def _two_moons(n, rng):
    from sklearn.datasets import make_moons
    x, _ = make_moons(n, noise=0.05, random_state=rng.integers(2**31))
    return (x - np.array([0.5, 0.25])) / np.array([0.87, 0.5]) * 1.0


def _swiss_roll(n, rng):
    from sklearn.datasets import make_swiss_roll
    x, _ = make_swiss_roll(n, noise=0.3, random_state=rng.integers(2**31))
    return x[:, [0, 2]] / 7.5


def _eight_gaussians(n, rng):
    k = rng.integers(0, 8, n)
    ang = 2 * math.pi * k / 8
    centers = np.stack([np.cos(ang), np.sin(ang)], 1) * 1.5
    return centers + 0.1 * rng.standard_normal((n, 2))


def _checkerboard(n, rng):
    x1 = rng.uniform(-2, 2, n)
    x2 = rng.uniform(0, 1, n) + rng.integers(0, 2, n) * 2 - 2 + np.floor(x1 + 2) % 2
    return np.stack([x1, x2], 1) / 1.15


TOY_DATASETS = {"two_moons": _two_moons, "swiss_roll": _swiss_roll, "eight_gaussians": _eight_gaussians,
                "checkerboard": _checkerboard}


def make_toy(name: str, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """``n`` points of a 2-D toy distribution as a float32 tensor (n, 2), scaled to roughly unit spread.

    ``name`` is one of ``two_moons``, ``swiss_roll``, ``eight_gaussians``, ``checkerboard``; the same seed
    gives the same points.
    """
    if name not in TOY_DATASETS:
        raise unknown_name("toy data set", name, TOY_DATASETS)
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.asarray(TOY_DATASETS[name](n, rng), dtype=np.float32))


# ----------------------------------------------------------------------------- digits (offline)
def load_digits(split: str = "train"):
    """sklearn's 8×8 handwritten digits at native size, as ``(x, y)``.

    ``x``: float32 (N, 1, 8, 8), pixels 0…16 mapped to ``x = pixel/8 − 1`` (so [-1, 1], a 17-level grid);
    ``y``: int64 (N,). The split is fixed: a stratified 80/20 split of the 1797 images with
    ``sklearn.model_selection.train_test_split(test_size=0.2, random_state=0, stratify=labels)``,
    giving 1437 train and 360 test images. ``split`` is ``"train"``, ``"test"`` or ``"all"``.
    """
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    _check_split(split, ("train", "test", "all"))
    d = _sk_digits()
    images = d.images.astype(np.float32)
    labels = d.target.astype(np.int64)
    if split != "all":
        idx = np.arange(len(labels))
        tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels)
        sel = np.sort(tr if split == "train" else te)
        images, labels = images[sel], labels[sel]
    x = torch.from_numpy(images / 8.0 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(labels)


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1] for display."""
    return ((x + 1) / 2).clamp(0, 1)


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1], the range every model here assumes."""
    return x * 2 - 1


# ----------------------------------------------------------------------------- MNIST family (online)
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path) -> np.ndarray:
    """Read an IDX file (the MNIST format; ``.gz`` allowed) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptFileError(f"{path} is not an IDX file (bad magic number)", path=path)
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        raise CorruptFileError(f"{path}: unknown IDX element type 0x{code:02x}; known: "
                               f"{[hex(c) for c in _IDX_DTYPES]}", path=path)
    if len(data) < 4 + 4 * ndim:
        raise CorruptFileError(f"{path}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} header bytes, "
                               f"the file holds {len(data)}", path=path)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[code])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim:]
    if len(body) != expected:
        raise CorruptFileError(f"{path}: IDX header says {dims} ({expected} bytes) but the file holds {len(body)} bytes",
                               path=path)
    return np.frombuffer(body, dtype=dtype).reshape(dims)


_MNIST_FAMILY = {
    "mnist": ("MNIST", "MNIST"),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST"),
}


def _find_idx(raw: Path, stem: str):
    for cand in (raw / stem, raw / (stem + ".gz")):
        if cand.exists():
            return cand
    return None


def load_mnist_family(name: str = "mnist", split: str = "train", root: str | os.PathLike = "data", download: bool = True):
    """MNIST or Fashion-MNIST as ``(x, y)``: x float32 (N, 1, 28, 28) in [-1, 1], y int64.

    Reads the IDX files from ``root/<MNIST|FashionMNIST>/raw`` (torchvision's layout). When they are
    missing and ``download`` is true, torchvision fetches them; without a network this raises
    :class:`OfflineDatasetError` naming the offline alternative, :func:`load_digits`.
    """
    if name not in _MNIST_FAMILY:
        raise unknown_name("data set", name, _MNIST_FAMILY)
    _check_split(split, ("train", "test"))
    folder, tv_name = _MNIST_FAMILY[name]
    raw = Path(root) / folder / "raw"
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    files = [_find_idx(raw, s) for s in stems]
    if None in files:
        if not download:
            raise FileNotFoundError(f"{name}: IDX files not found under {raw}; pass download=True (needs a network) "
                                    "or use diffusion_lab.data.load_digits() offline")
        _torchvision_download(tv_name, root, split)
        files = [_find_idx(raw, s) for s in stems]
        if None in files:
            raise OfflineDatasetError(f"{name}: download finished but IDX files are missing under {raw}")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise CorruptFileError(f"{name}: images {images.shape} in {files[0]} and labels {labels.shape} in {files[1]} "
                               "do not match", path=files[0])
    x = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def _offline_error(name, err):
    return OfflineDatasetError(
        f"could not download {name} ({type(err).__name__}: {err}). This machine seems to be offline. "
        "Use diffusion_lab.data.load_digits() (ships with scikit-learn) or a 2-D toy from make_toy(), "
        "or copy the data set's files under the root folder first.")


def _import_torchvision():
    try:
        import torchvision  # noqa: F401
        from torchvision import datasets
    except Exception as err:  # ImportError, or an operator mismatch with the installed torch
        raise ImportError(
            f"torchvision is needed to download this data set but could not be imported ({err}). "
            "Install a torchvision that matches your torch (Colab has one), or use diffusion_lab.data.load_digits()."
        ) from err
    return datasets


def _torchvision_download(tv_name, root, split):
    datasets = _import_torchvision()
    try:
        getattr(datasets, tv_name)(root=str(root), train=(split == "train"), download=True)
    except (OSError, RuntimeError) as err:  # URLError is an OSError
        raise _offline_error(tv_name, err) from err


def load_cifar10(split: str = "train", root: str | os.PathLike = "data", download: bool = True):
    """CIFAR-10 through torchvision as ``(x, y)``: x float32 (N, 3, 32, 32) in [-1, 1], y int64. Online only."""
    _check_split(split, ("train", "test"))
    datasets = _import_torchvision()
    try:
        ds = datasets.CIFAR10(root=str(root), train=(split == "train"), download=download)
    except (OSError, RuntimeError) as err:
        raise _offline_error("CIFAR10", err) from err
    x = torch.from_numpy(np.asarray(ds.data, dtype=np.float32) / 127.5 - 1.0).permute(0, 3, 1, 2).contiguous()
    return x, torch.as_tensor(ds.targets, dtype=torch.long)


# ----------------------------------------------------------------------------- by name
IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist")
DATASETS = IMAGE_DATASETS + tuple(TOY_DATASETS)


def load_dataset(name: str, split: str = "train", *, root: str | os.PathLike = "data", toy_points: int = 8000,
                 seed: int = 0):
    """``(x, y, num_classes)`` for a data set name of :data:`DATASETS` (what the command line's ``--data`` takes):
    ``digits`` (offline), ``mnist`` / ``fashion_mnist`` (torchvision, online the first time), or a 2-D toy of
    ``toy_points`` points drawn with ``seed``, which has no labels (``y`` and ``num_classes`` are None)."""
    if name == "digits":
        x, y = load_digits(split)
        return x, y, 10
    if name in _MNIST_FAMILY:
        x, y = load_mnist_family(name, split, root=root)
        return x, y, 10
    if name in TOY_DATASETS:
        return make_toy(name, n=toy_points, seed=seed), None, None
    raise unknown_name("data set", name, DATASETS)
