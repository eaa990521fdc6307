import pickle
import struct

import numpy as np
import pytest
import torch

from robustbench_dice.datasets import load_dataset
from robustbench_dice.errors import ConfigError, DatasetNotFoundError


def test_digits_is_the_real_dataset():
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1437, 64) and ds.x_test.shape == (360, 64)
    assert ds.num_classes == 10 and 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert set(ds.y_test.tolist()) == set(range(10))


def test_mnist1d_is_generated_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTBENCH_DICE_CACHE", str(tmp_path))
    a = load_dataset("mnist1d", mnist1d_samples=500)
    assert a.x_train.shape == (400, 40) and a.x_test.shape == (100, 40)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1
    b = load_dataset("mnist1d", mnist1d_samples=500)
    assert (a.x_train == b.x_train).all()


@pytest.mark.parametrize(
    "damage",
    [lambda b: b[:1000], lambda b: b"garbage", lambda b: _npz(x=np.zeros(3, dtype=object))],
    ids=["cut short", "not a zip", "a pickle inside"],
)
def test_a_damaged_mnist1d_cache_is_generated_again(tmp_path, monkeypatch, damage):
    """A cache file cut short or written by something else made every later MNIST-1D load fail (BadZipFile, or
    numpy refusing a pickle); it is now generated again, with a warning, into the same data."""
    monkeypatch.setenv("ROBUSTBENCH_DICE_CACHE", str(tmp_path))
    a = load_dataset("mnist1d", mnist1d_samples=500)
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    cache.write_bytes(damage(cache.read_bytes()))
    with pytest.warns(UserWarning, match="the MNIST-1D cache .* does not read .*; generating it again"):
        b = load_dataset("mnist1d", mnist1d_samples=500)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    c = load_dataset("mnist1d", mnist1d_samples=500)  # from the rewritten cache, with no warning
    assert torch.equal(a.x_train, c.x_train)


def _npz(**arrays):
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _write_idx(path, array, magic):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def _write_mnist(raw, images=None, labels=None, cut=0, magic=2051):
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 5)):
        _write_idx(raw / f"{split}-images-idx3-ubyte", rng.integers(0, 256, images or (n, 28, 28)), magic)
        _write_idx(raw / f"{split}-labels-idx1-ubyte", np.arange(labels or n) % 10, 2049)
        if cut:
            path = raw / f"{split}-images-idx3-ubyte"
            path.write_bytes(path.read_bytes()[:-cut])


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_family_reads_real_idx_files(tmp_path, name, folder):
    raw = tmp_path / folder / "raw"
    raw.mkdir(parents=True)
    _write_mnist(raw)
    ds = load_dataset(name, str(tmp_path))
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_test.shape == (5, 1, 28, 28)
    assert ds.y_train.tolist() == [i % 10 for i in range(12)]


@pytest.mark.parametrize(
    "damage,reason",
    [
        ({"cut": 100}, "is invalid for input of size"),  # truncated download
        ({"magic": 1234}, "AssertionError"),  # torchvision asserts on the header, with no message
        ({"labels": 7}, "y_train must be int64 of shape \\(12,\\)"),  # fewer labels than images
        ({"images": (12, 20, 20)}, "train images of shape \\(1, 20, 20\\), expected \\(1, 28, 28\\)"),
    ],
)
def test_damaged_mnist_files_say_which_folder_to_delete(tmp_path, damage, reason):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_mnist(raw, **damage)
    folder = str(tmp_path / "MNIST")
    # the download skips files that exist, so the way out is to delete them first
    with pytest.raises(DatasetNotFoundError, match=f"incomplete or corrupted: .*{reason}.*Delete '{folder}' and get"):
        load_dataset("mnist", str(tmp_path))


def test_cifar10_reads_real_python_batches(tmp_path, monkeypatch):
    import torchvision

    # torchvision checks each file's md5 against the official release before unpickling; tiny test files cannot match.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        entry = {"data": rng.integers(0, 256, (3, 3072)).astype(np.uint8), "labels": [1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
    ds = load_dataset("cifar10", str(tmp_path))
    assert ds.x_train.shape == (15, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)


def test_missing_datasets_say_how_to_get_them(tmp_path):
    with pytest.raises(ConfigError, match="needs data_root"):
        load_dataset("mnist")
    with pytest.raises(DatasetNotFoundError, match="does not exist; get mnist with: robustbench-dice download mnist"):
        load_dataset("mnist", str(tmp_path / "nowhere"))
    with pytest.raises(DatasetNotFoundError, match="cifar10 not found under .* \\(no cifar-10-batches-py/ there\\)"):
        load_dataset("cifar10", str(tmp_path))
    (tmp_path / "cifar-10-batches-py").mkdir()  # a download cut short; torchvision's advice (download=True) is left out
    with pytest.raises(
        DatasetNotFoundError, match="^cifar10 under .* corrupted: Dataset not found or corrupted. Delete"
    ):
        load_dataset("cifar10", str(tmp_path))
    with pytest.raises(ConfigError, match="valid: cifar10, digits"):
        load_dataset("svhn")


def test_download_without_network_is_a_clear_error(tmp_path, monkeypatch, capsys):
    import urllib.error

    import torchvision

    from robustbench_dice.cli import main

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    assert main(["download", "mnist", "--data-root", str(tmp_path / "data")]) == 2
    err = capsys.readouterr().err
    assert "could not download mnist" in err and "Name or service not known" in err
    assert "needs internet access" in err and "Traceback" not in err


def test_download_into_a_file_is_a_clear_error(tmp_path, capsys):
    from robustbench_dice.cli import main

    blocker = tmp_path / "data"
    blocker.write_text("")
    assert main(["download", "mnist", "--data-root", str(blocker)]) == 2  # "data: File exists" before
    assert (
        f"data root '{blocker}' is a file, not a folder; give a folder to download mnist into"
        in capsys.readouterr().err
    )
    assert main(["download", "mnist", "--data-root", str(blocker / "sub")]) == 2
    assert f"data root '{blocker / 'sub'}' cannot be made (Not a directory)" in capsys.readouterr().err


def _digits_with(**changes):
    import dataclasses

    return dataclasses.replace(load_dataset("digits"), **changes)


def _bad_datasets():
    import torch

    digits = load_dataset("digits")
    nan = digits.x_test.clone()
    nan[0, 0] = float("nan")
    return [
        (
            "not a dataset",
            (digits.x_train, digits.y_train),
            "the loader must return a robustbench_dice.datasets.Dataset",
        ),
        ("renamed", _digits_with(name="other"), "the loader returned a Dataset named 'other'; name it 'digits'"),
        ("float64", _digits_with(x_train=digits.x_train.double()), "x_train must be float32 .* got torch.float64"),
        ("flat", _digits_with(x_test=digits.x_test[:, 0]), r"x_test must be float32 of shape \(n, \*input_shape\)"),
        ("int32 labels", _digits_with(y_train=digits.y_train.int()), "y_train must be int64 of shape \\(1437,\\)"),
        ("short labels", _digits_with(y_test=digits.y_test[1:]), "y_test must be int64 of shape \\(360,\\)"),
        ("numpy", _digits_with(x_test=digits.x_test.numpy()), "x_test and y_test must be torch tensors"),
        ("empty", _digits_with(x_test=digits.x_test[:0], y_test=digits.y_test[:0]), "the test split is empty"),
        ("nan", _digits_with(x_test=nan), "x_test holds NaN or infinite values"),
        ("labels", _digits_with(num_classes=9), r"labels of y_train must be in \[0, num_classes=9\), got 0..9"),
        ("one class", _digits_with(num_classes=1), "num_classes must be an integer >= 2, got 1"),
        (
            "shapes",
            _digits_with(x_test=torch.zeros(360, 63)),
            r"train and test inputs differ in shape: \(64,\) vs \(63,\)",
        ),
    ]


@pytest.mark.parametrize("what,dataset,message", _bad_datasets(), ids=[case[0] for case in _bad_datasets()])
def test_check_dataset_names_what_a_loader_got_wrong(what, dataset, message):
    from robustbench_dice.datasets import check_dataset

    with pytest.raises(ConfigError, match=f"dataset 'digits': {message}"):
        check_dataset("digits", dataset)


def test_check_dataset_accepts_the_built_in_datasets():
    from robustbench_dice.datasets import check_dataset

    digits = load_dataset("digits")
    assert check_dataset("digits", digits) is digits
    mnist1d = load_dataset("mnist1d", mnist1d_samples=200)
    assert check_dataset("mnist1d", mnist1d) is mnist1d
