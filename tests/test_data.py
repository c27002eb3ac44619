"""Data: seeded toys, sklearn digits (offline), IDX files and the MNIST family without a network;
and the compute-profile switch that decides which data a chapter uses."""
import gzip
import socket
import struct
import sys
import types
import urllib.error

import numpy as np
import pytest
import torch

from diffusion_lab import data as data_mod
from diffusion_lab import profile
from diffusion_lab.data import (TOY_DATASETS, OfflineDatasetError, load_cifar10, load_digits, load_mnist_family,
                                make_toy, read_idx)


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """Every test here must work offline: any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a data test tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ----------------------------------------------------------------------------- toys
@pytest.mark.parametrize("name", sorted(TOY_DATASETS))
def test_make_toy_is_seeded_shaped_and_unit_scaled(name):
    a = make_toy(name, 3000, seed=0)
    assert a.shape == (3000, 2) and a.dtype == torch.float32
    assert torch.equal(a, make_toy(name, 3000, seed=0))
    b = make_toy(name, 3000, seed=1)
    assert not torch.allclose(a, b)
    assert torch.isfinite(a).all()
    sd, mean = a.std(0), a.mean(0)
    assert ((sd > 0.7) & (sd < 1.3)).all(), sd
    assert (mean.abs() < 0.5).all(), mean
    assert a.abs().max() < 3


def test_make_toy_bad_input():
    with pytest.raises(ValueError, match=r"unknown toy data set 'spiral'; choose one of \['checkerboard', "):
        make_toy("spiral")
    for n in (0, -3, 2.5, True, "10"):
        with pytest.raises(ValueError, match="n must be a positive int"):
            make_toy("two_moons", n)


# ----------------------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits():
    return {s: load_digits(s) for s in ("train", "test", "all")}


def test_digits_shapes_and_dtypes(digits):
    for split, n in (("train", 1437), ("test", 360), ("all", 1797)):
        x, y = digits[split]
        assert x.shape == (n, 1, 8, 8) and x.dtype == torch.float32
        assert y.shape == (n,) and y.dtype == torch.int64
        assert set(y.tolist()) == set(range(10))


def test_digits_range_is_exactly_minus_one_to_one_on_17_levels(digits):
    x, _ = digits["all"]
    assert x.min().item() == -1.0 and x.max().item() == 1.0
    levels = (x + 1) * 8                               # x = pixel/8 − 1  ⇔  pixel = 8(x + 1)
    assert torch.equal(levels, levels.round())
    assert set(levels.unique().tolist()) == set(float(k) for k in range(17))
    # against sklearn's raw pixels
    from sklearn.datasets import load_digits as sk
    raw = torch.from_numpy(sk().images).float().unsqueeze(1)
    assert torch.equal(x, raw / 8 - 1)


def test_digits_split_is_a_stratified_partition(digits):
    (xtr, ytr), (xte, yte), (xall, yall) = digits["train"], digits["test"], digits["all"]
    rows = lambda x, y: {xi.numpy().tobytes() + bytes([int(yi)]) for xi, yi in zip(x, y)}  # noqa: E731
    tr, te, al = rows(xtr, ytr), rows(xte, yte), rows(xall, yall)
    assert len(al) == 1797                             # every image is distinct, so sets identify items
    assert tr.isdisjoint(te)
    assert tr | te == al
    counts_all = torch.bincount(yall, minlength=10)
    counts_te = torch.bincount(yte, minlength=10)
    assert ((counts_te - 0.2 * counts_all).abs() <= 1).all()     # stratified: 20% of every class, ±1


def test_digits_split_is_deterministic_and_the_documented_one(digits):
    x2, y2 = load_digits("train")
    assert torch.equal(x2, digits["train"][0]) and torch.equal(y2, digits["train"][1])
    from sklearn.model_selection import train_test_split
    yall = digits["all"][1].numpy()
    _, te = train_test_split(np.arange(1797), test_size=0.2, random_state=0, stratify=yall)
    assert torch.equal(digits["test"][0], digits["all"][0][np.sort(te)])


def test_digits_bad_split():
    with pytest.raises(ValueError, match=r"split must be 'train', 'test' or 'all', got 'val'"):
        load_digits("val")


# ----------------------------------------------------------------------------- IDX files
def _idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    return header + arr.tobytes()


def _write(path, payload: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(_write(tmp_path / ("imgs-idx3-ubyte" + suffix), _idx_bytes(arr)))
    assert out.dtype == np.uint8 and np.array_equal(out, arr)
    big = np.array([[1, -2, 70000]], dtype=">i4")
    out = read_idx(_write(tmp_path / ("ints" + suffix), _idx_bytes(big, 0x0C)))
    assert np.array_equal(out, big) and out.shape == (1, 3)
    f = np.array([0.5, -1.25], dtype=">f8")
    assert np.array_equal(read_idx(_write(tmp_path / ("f" + suffix), _idx_bytes(f, 0x0E))), f)


def test_read_idx_corrupt_files(tmp_path):
    arr = np.zeros((2, 3), dtype=np.uint8)
    good = _idx_bytes(arr)
    with pytest.raises(ValueError, match="is not an IDX file \\(bad magic number\\)"):
        read_idx(_write(tmp_path / "magic", b"\x1f\x8b" + good[2:]))
    with pytest.raises(ValueError, match="is not an IDX file"):
        read_idx(_write(tmp_path / "tiny", b"\x00\x00"))
    with pytest.raises(ValueError, match="unknown IDX element type 0x07"):
        read_idx(_write(tmp_path / "code", good[:2] + b"\x07" + good[3:]))
    with pytest.raises(ValueError, match="truncated IDX header: 3 dimensions need 16 header bytes"):
        read_idx(_write(tmp_path / "header", bytes([0, 0, 8, 3, 0, 0, 0, 2])))
    with pytest.raises(ValueError, match=r"IDX header says \(2, 3\) \(6 bytes\) but the file holds 5 bytes"):
        read_idx(_write(tmp_path / "body", good[:-1]))
    with pytest.raises(ValueError, match="but the file holds 7 bytes"):
        read_idx(_write(tmp_path / "long.gz", good + b"\x00"))


# ----------------------------------------------------------------------------- MNIST family, offline
def _mnist_files(root, folder="MNIST", prefix="train", n=5, gz_labels=True, seed=0):
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    imgs[0, 0, 0], imgs[0, 0, 1] = 0, 255
    labels = rng.integers(0, 10, n).astype(np.uint8)
    raw = root / folder / "raw"
    _write(raw / f"{prefix}-images-idx3-ubyte", _idx_bytes(imgs))
    _write(raw / (f"{prefix}-labels-idx1-ubyte" + (".gz" if gz_labels else "")), _idx_bytes(labels))
    return imgs, labels


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
@pytest.mark.parametrize("split,prefix", [("train", "train"), ("test", "t10k")])
def test_load_mnist_family_reads_torchvision_layout(tmp_path, name, folder, split, prefix):
    imgs, labels = _mnist_files(tmp_path, folder, prefix)
    x, y = load_mnist_family(name, split, root=tmp_path, download=False)
    assert x.shape == (5, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    assert x[0, 0, 0, 0].item() == -1.0 and x[0, 0, 0, 1].item() == 1.0
    assert torch.allclose(x[:, 0], torch.from_numpy(imgs).float() / 127.5 - 1, atol=1e-6)
    assert x.min() >= -1 and x.max() <= 1


def test_load_mnist_family_missing_files_offline(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_digits"):
        load_mnist_family("mnist", "train", root=tmp_path, download=False)
    _mnist_files(tmp_path, prefix="train")           # train present, test still missing
    with pytest.raises(FileNotFoundError, match=r"IDX files not found under .*MNIST.raw.*load_digits"):
        load_mnist_family("mnist", "test", root=tmp_path, download=False)


def test_load_mnist_family_mismatched_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    _write(raw / "train-images-idx3-ubyte", _idx_bytes(np.zeros((4, 28, 28), np.uint8)))
    _write(raw / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(ValueError, match="do not match"):
        load_mnist_family("mnist", "train", root=tmp_path, download=False)


def test_load_mnist_family_without_torchvision(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)   # `import torchvision` now raises ImportError
    with pytest.raises(ImportError, match="torchvision is needed.*load_digits"):
        load_mnist_family("mnist", "train", root=tmp_path, download=True)
    with pytest.raises(ImportError, match="load_digits"):
        load_cifar10("train", root=tmp_path)


def _fake_torchvision(monkeypatch, behaviour):
    calls = []

    class FakeDataset:
        def __init__(self, root, train, download):
            calls.append((self.__class__.__name__, root, train, download))
            behaviour(root, train)

    datasets = types.SimpleNamespace(**{n: type(n, (FakeDataset,), {}) for n in ("MNIST", "FashionMNIST", "CIFAR10")})
    monkeypatch.setattr(data_mod, "_import_torchvision", lambda: datasets)
    return calls


@pytest.mark.parametrize("err", [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
                                 RuntimeError("Error downloading train-images-idx3-ubyte.gz")])
def test_load_mnist_family_offline_download(tmp_path, monkeypatch, err):
    def fail(root, train):
        raise err
    calls = _fake_torchvision(monkeypatch, fail)
    with pytest.raises(OfflineDatasetError, match="could not download FashionMNIST.*offline.*load_digits"):
        load_mnist_family("fashion_mnist", "test", root=tmp_path, download=True)
    assert calls == [("FashionMNIST", str(tmp_path), False, True)]
    with pytest.raises(OfflineDatasetError, match="load_digits"):
        load_cifar10("train", root=tmp_path)


def test_load_mnist_family_download_path(tmp_path, monkeypatch):
    from pathlib import Path
    calls = _fake_torchvision(monkeypatch, lambda root, train: _mnist_files(Path(root), "MNIST", "train"))
    x, y = load_mnist_family("mnist", "train", root=tmp_path, download=True)
    assert x.shape == (5, 1, 28, 28) and calls == [("MNIST", str(tmp_path), True, True)]
    # files present now: no second download
    load_mnist_family("mnist", "train", root=tmp_path, download=True)
    assert len(calls) == 1
    # a "successful" download that left no files is reported, not silently ignored
    _fake_torchvision(monkeypatch, lambda root, train: None)
    with pytest.raises(OfflineDatasetError, match="download finished but IDX files are missing"):
        load_mnist_family("mnist", "test", root=tmp_path, download=True)


def test_mnist_family_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'kmnist'; choose one of \['fashion_mnist', 'mnist'\]"):
        load_mnist_family("kmnist", root=tmp_path, download=False)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'all'"):
        load_mnist_family("mnist", "all", root=tmp_path, download=False)
    with pytest.raises(ValueError, match=r"split must be 'train' or 'test', got 'val'"):
        load_cifar10("val", root=tmp_path)


def test_range_helpers():
    x = torch.tensor([-1.0, 0.0, 1.0, 1.5])
    assert torch.equal(data_mod.to_unit_range(x), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    assert torch.equal(data_mod.to_image_range(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-1.0, 0.0, 1.0]))


# ----------------------------------------------------------------------------- compute profile
@pytest.mark.parametrize("value,expected", [("cpu", "cpu"), ("gpu", "gpu"), (" GPU ", "gpu"), ("Cpu", "cpu")])
def test_profile_env_var_is_respected(monkeypatch, value, expected):
    monkeypatch.setenv(profile.ENV_VAR, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: expected != "gpu")  # the variable wins over CUDA
    assert profile.get_profile() == expected
    assert profile.by_profile(cpu=300, gpu=20_000) == (20_000 if expected == "gpu" else 300)


@pytest.mark.parametrize("cuda", [True, False])
def test_profile_default_follows_cuda(monkeypatch, cuda):
    monkeypatch.delenv(profile.ENV_VAR, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert profile.get_profile() == ("gpu" if cuda else "cpu")
    monkeypatch.setenv(profile.ENV_VAR, "")
    assert profile.get_profile() == ("gpu" if cuda else "cpu")


def test_profile_bad_value_raises(monkeypatch):
    assert profile.ENV_VAR == "DIFFUSION_LAB_PROFILE"
    monkeypatch.setenv(profile.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match=r"DIFFUSION_LAB_PROFILE must be one of \('cpu', 'gpu'\), got 'tpu'"):
        profile.get_profile()
    with pytest.raises(ValueError, match="DIFFUSION_LAB_PROFILE"):
        profile.by_profile(cpu=1, gpu=2)
