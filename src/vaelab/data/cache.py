"""The on-disk cache of data sets: one compressed ``.npz`` per data set, written atomically,
with its splits, derived splits (MNIST's train50k/valid) and credits."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from vaelab.data.dataset import ImageDataset
from vaelab.errors import DataError
from vaelab.files import atomic_write, remove_stale_temporaries

try:
    import fcntl
except ImportError:  # Windows: entries are written unguarded
    fcntl = None  # type: ignore[assignment]

# --------------------------------------------------------------------------------------
# Cache: one compressed .npz per data set, written atomically
# --------------------------------------------------------------------------------------


def cache_dir(override: str | Path | None = None) -> Path:
    """Where data sets are cached: ``override``, else ``$VAELAB_CACHE``, else ~/.cache/vaelab;
    a file there is refused (it read as an empty cache)."""
    env = os.environ.get("VAELAB_CACHE")
    path = Path(override or env or Path.home() / ".cache" / "vaelab").expanduser()
    if path.exists() and not path.is_dir():
        what = "--cache" if override else "$VAELAB_CACHE" if env else "the cache"
        raise DataError(f"{what} {path} is a file, not a folder")
    return path


def check_name(name: str) -> None:
    """A new data set's name: letters, digits, '-' and '_' (no spaces, newlines, non-ASCII)."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise DataError(f"invalid data set name {name!r}: use letters, digits, '-' and '_'")


def _dataset_path(name: str, cache: str | Path | None) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(f"invalid data set name {name!r}: use letters, digits, '-' and '_'")
    return cache_dir(cache) / "datasets" / f"{name}.npz"


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
    check_name(name)
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


@contextlib.contextmanager
def writing(name: str, cache: str | Path | None) -> Iterator[None]:
    """Hold cache entry ``name`` while a process reads, changes and writes it (an exclusive
    flock on ``datasets/.NAME.lock``): a second process importing, composing or fetching
    the same name waits, then sees what the first wrote (no lost split, no silent
    overwrite). Where flock is missing or refused the entry is written unguarded."""
    check_name(name)
    path = _dataset_path(name, cache)
    if fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{name}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another vaelab process writing data set {name!r} …",
                  file=sys.stderr)  # fmt: skip
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # no locks on this file system
            pass
        else:
            remove_stale_temporaries(path.parent, path.name)  # a killed writer's
        yield
    finally:
        os.close(fd)  # releases the lock


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


KNOWN_SOURCES: dict = {}
"""Data sets ``vaelab data fetch`` knows: name -> its fetch function (cache=, force=, …);
:mod:`vaelab.data.mnist` adds "mnist"."""


def fetch(name: str, cache: str | Path | None = None, **kwargs) -> Path:
    """Fetch a known data set by name into the cache."""
    if name not in KNOWN_SOURCES:
        raise DataError(f"unknown data set {name!r} to fetch (known: {', '.join(KNOWN_SOURCES)})")
    return KNOWN_SOURCES[name](cache=cache, **kwargs)


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
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        why = "pickled data or not an .npz" if "pickle" in str(e) else str(e) or repr(e)
        raise DataError(f"{path}: cannot read the cached data set ({why}); fetch or import "
                        "it again with --force") from e  # fmt: skip
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a vaelab data set (a bare array, not an .npz archive)")
    return path, npz


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
    with writing(name, cache):
        return _add_splits(name, splits, cache, source, replace)


def _add_splits(name, splits, cache, source, replace) -> Path:
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
