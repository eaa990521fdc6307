"""Datasets: a train pool and a held-out global test set, as float32 / int64 tensors.

``digits`` (scikit-learn's bundled 8x8 handwritten digits) and ``mnist1d``
(generated locally by the ``mnist1d`` package) work offline. ``mnist``,
``fashion-mnist`` and ``cifar10`` are read by torchvision from ``data_root``;
``robustbench-dice download NAME --data-root DIR`` fetches them where online.
Datasets of your own are loader functions registered with
:func:`robustbench_dice.registry.register_dataset`; what they return is checked
by :func:`check_dataset`.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import os
import re
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError, DatasetNotFoundError, check_choice
from .io import atomic_write_bytes

DATASETS = {  # name -> what it is and where it comes from
    "digits": "8x8 handwritten digits, 1797 images (scikit-learn, shipped offline)",
    "mnist1d": "MNIST-1D, 40-point 1-D signals generated locally (mnist1d package)  [mnist1d_samples]",
    "mnist": "28x28 handwritten digits (torchvision)  [data_root]",
    "fashion-mnist": "28x28 clothing images (torchvision)  [data_root]",
    "cifar10": "32x32 colour images, 10 classes (torchvision)  [data_root]",
}
TORCHVISION_DATASETS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
_NORMALISATION = {  # per-channel mean, std of the training images in [0, 1]
    "mnist": ((0.1307,), (0.3081,)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
_IMAGE_SHAPE = {"mnist": (1, 28, 28), "fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}  # (channels, h, w)
DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True, eq=False)
class Dataset:
    """Shapes: ``x_train (n, *input_shape)`` float32, ``y_train (n,)`` int64; same for test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


# loader functions registered by plugins (registry.register_dataset), not the built-in datasets: loader(), or
# loader(data_root) for one that takes an argument
PLUGIN_DATASETS: dict[str, Callable[..., Dataset]] = {}


def positional_arity(function: Callable[..., object]) -> int:
    """How many positional arguments ``function`` takes: a plugin function's signature. Keyword-only ones, such as
    those a ``functools.partial`` binds, do not count; one with a default does (``data_root=None``)."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return sum(p.kind in positional for p in inspect.signature(function).parameters.values())


def load_dataset(name: str, data_root: str | None = None, *, mnist1d_samples: int = 5000) -> Dataset:
    """Load ``name``; the test split is fixed (independent of the scenario seed)."""
    check_choice("dataset", name, DATASETS)
    if name in PLUGIN_DATASETS:
        loader = PLUGIN_DATASETS[name]
        return check_dataset(name, loader(data_root) if positional_arity(loader) else loader())
    if name == "digits":
        return _load_digits()
    if name == "mnist1d":
        return _load_mnist1d(mnist1d_samples)
    return _load_torchvision(name, data_root)


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=y)
    return Dataset(
        "digits",
        torch.from_numpy(x_tr),
        torch.from_numpy(y_tr),
        torch.from_numpy(x_te),
        torch.from_numpy(y_te),
        num_classes=10,
    )


def check_dataset(name: str, dataset: object) -> Dataset:
    """``dataset`` if it is what the engine needs, else a ConfigError naming dataset ``name`` and what is wrong.

    Needs: a :class:`Dataset` named ``name``; float32 inputs ``(n, *input_shape)`` with the same input shape for
    train and test, finite; int64 labels ``(n,)`` in ``[0, num_classes)``; at least one sample in each split and
    at least two classes.
    """
    where = f"dataset {name!r}"
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"{where}: the loader must return a robustbench_dice.datasets.Dataset, got {type(dataset)}")
    if dataset.name != name:
        raise ConfigError(f"{where}: the loader returned a Dataset named {dataset.name!r}; name it {name!r}")
    if not isinstance(dataset.num_classes, int) or dataset.num_classes < 2:
        raise ConfigError(f"{where}: num_classes must be an integer >= 2, got {dataset.num_classes!r}")
    for split in ("train", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ConfigError(f"{where}: x_{split} and y_{split} must be torch tensors, got {type(x)}, {type(y)}")
        if x.dtype != torch.float32 or x.ndim < 2:
            raise ConfigError(
                f"{where}: x_{split} must be float32 of shape (n, *input_shape), got {x.dtype} of shape"
                f" {tuple(x.shape)} (.float() converts; a flat feature vector per sample is (n, features))"
            )
        if y.dtype != torch.int64 or y.shape != x.shape[:1]:
            raise ConfigError(
                f"{where}: y_{split} must be int64 of shape ({x.shape[0]},) to match x_{split}, got {y.dtype} of"
                f" shape {tuple(y.shape)} (.long() converts)"
            )
        if x.shape[0] == 0:
            raise ConfigError(f"{where}: the {split} split is empty")
        if not bool(torch.isfinite(x).all()):
            raise ConfigError(f"{where}: x_{split} holds NaN or infinite values")
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= dataset.num_classes:
            raise ConfigError(
                f"{where}: labels of y_{split} must be in [0, num_classes={dataset.num_classes}), got {low}..{high}"
            )
    if dataset.x_test.shape[1:] != dataset.x_train.shape[1:]:
        raise ConfigError(
            f"{where}: train and test inputs differ in shape: {tuple(dataset.x_train.shape[1:])} vs"
            f" {tuple(dataset.x_test.shape[1:])}"
        )
    return dataset


def _cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTBENCH_DICE_CACHE", Path.home() / ".cache" / "robustbench_dice"))


def _load_mnist1d(num_samples: int) -> Dataset:
    """MNIST-1D (Greydanus 2020) generated with the package defaults; cached as a pickle-free .npz."""
    if num_samples < 100:
        raise ConfigError(f"mnist1d_samples must be >= 100, got {num_samples}")
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    settings = {k: v for k, v in vars(args).items() if k != "url"}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = _cache_dir() / f"mnist1d-{key}.npz"
    arrays = _read_mnist1d_cache(path)
    if arrays is None:
        state = np.random.get_state()  # make_dataset reseeds numpy's global generator
        try:
            generated = make_dataset(args)
        finally:
            np.random.set_state(state)
        arrays = {k: np.asarray(generated[k]) for k in ("x", "y", "x_test", "y_test")}
        buffer = io.BytesIO()
        np.savez(buffer, x=arrays["x"], y=arrays["y"], x_test=arrays["x_test"], y_test=arrays["y_test"])
        atomic_write_bytes(path, buffer.getvalue())
    mean, std = arrays["x"].mean(), arrays["x"].std()
    x_tr = ((arrays["x"] - mean) / std).astype(np.float32)
    x_te = ((arrays["x_test"] - mean) / std).astype(np.float32)
    return Dataset(
        "mnist1d",
        torch.from_numpy(x_tr),
        torch.from_numpy(arrays["y"].astype(np.int64)),
        torch.from_numpy(x_te),
        torch.from_numpy(arrays["y_test"].astype(np.int64)),
        num_classes=10,
    )


def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays cached at ``path``; None when there is no file, or one that does not read (cut short, written by
    something else), which is then generated again rather than failing every later load."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        warnings.warn(f"the MNIST-1D cache {str(path)!r} does not read ({exc}); generating it again", stacklevel=3)
        return None


def how_to_get(name: str, data_root: str | None) -> str:
    root = data_root or "DATA_ROOT"
    return f"robustbench-dice download {name} --data-root {root}   (needs internet once)"


def _load_torchvision(name: str, data_root: str | None) -> Dataset:
    if data_root is None:
        raise ConfigError(
            f"dataset {name!r} needs data_root (a folder holding it); get it with: {how_to_get(name, None)}"
        )
    root = Path(data_root)
    if not root.is_dir():
        raise DatasetNotFoundError(
            f"data_root {str(root)!r} does not exist; get {name} with: {how_to_get(name, data_root)}"
        )
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    try:
        train = cls(str(root), train=True, download=False)
        test = cls(str(root), train=False, download=False)
    # a missing file is a RuntimeError; a damaged one whatever its parser hits first (a failed assert on an IDX
    # header, a bad int literal, a truncated buffer): all mean the same to the user
    except Exception as exc:
        raise DatasetNotFoundError(_unreadable(name, data_root, cls, str(exc) or type(exc).__name__)) from exc
    mean, std = _NORMALISATION[name]

    def to_tensor(data: object, targets: object) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.as_tensor(np.asarray(data), dtype=torch.float32) / 255.0
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        m = torch.tensor(mean).view(1, -1, 1, 1)
        s = torch.tensor(std).view(1, -1, 1, 1)
        return ((images - m) / s).contiguous(), torch.as_tensor(np.asarray(targets), dtype=torch.long)

    x_tr, y_tr = to_tensor(train.data, train.targets)
    x_te, y_te = to_tensor(test.data, test.targets)
    # files that parse can still disagree (images of another size, fewer labels than images)
    try:
        for split, x in (("train", x_tr), ("test", x_te)):
            if x.shape[1:] != _IMAGE_SHAPE[name]:
                raise ConfigError(f"{split} images of shape {tuple(x.shape[1:])}, expected {_IMAGE_SHAPE[name]}")
        return check_dataset(name, Dataset(name, x_tr, y_tr, x_te, y_te, num_classes=10))
    except ConfigError as exc:
        raise DatasetNotFoundError(_unreadable(name, data_root, cls, str(exc))) from exc


def _unreadable(name: str, data_root: str, cls: type, reason: str) -> str:
    """What to do about a torchvision dataset that is missing from ``data_root`` or does not read."""
    folder = Path(data_root) / getattr(cls, "base_folder", cls.__name__)  # CIFAR10.base_folder; MNIST: class name
    if not folder.exists():
        return f"{name} not found under {data_root!r} (no {folder.name}/ there). Get it with: {how_to_get(name, data_root)}"
    reason = re.sub(r"\s*You can use download=True to download it\.?", "", reason).rstrip(".")  # torchvision's advice
    # the download skips files that exist (torchvision checks no checksum of MNIST's), so damaged ones must go first
    return (
        f"{name} under {data_root!r} is incomplete or corrupted: {reason}. Delete {str(folder)!r} and get it"
        f" again with: {how_to_get(name, data_root)}"
    )


def download(name: str, data_root: str) -> None:
    """Fetch a torchvision dataset into ``data_root`` (needs internet)."""
    check_choice("downloadable dataset", name, TORCHVISION_DATASETS)
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION_DATASETS[name])
    try:
        Path(data_root).mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, or no permission: "afile: File exists" said neither plainly
        what = "is a file, not a folder" if Path(data_root).is_file() else f"cannot be made ({exc.strerror})"
        raise ConfigError(f"data root {data_root!r} {what}; give a folder to download {name} into") from exc
    try:
        for train in (True, False):
            cls(data_root, train=train, download=True)
    except (OSError, RuntimeError) as exc:  # no network (URLError), disk full; torchvision: every mirror failed
        reason = " ".join(str(exc).split())
        raise DatasetNotFoundError(
            f"could not download {name} into {data_root!r}: {reason}. Downloading needs internet access; on an offline"
            f" machine, run the download where it works and copy the data root folder over"
        ) from exc
