"""Importing images from files: IDX (MNIST, Fashion-MNIST, KMNIST, EMNIST), image folders
and ``.npz`` arrays, each into the cache of :mod:`vaelab.data` as a named data set."""

from __future__ import annotations

import glob
import zipfile
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from vaelab.data.cache import add_splits, save_dataset, writing
from vaelab.data.dataset import ImageDataset
from vaelab.data.idx import read_idx
from vaelab.errors import DataError
from vaelab.memory import check_memory


def idx_dataset(
    images: str | Path, labels: str | Path | None = None, name: str = "", transpose: bool = False
) -> ImageDataset:
    """An :class:`ImageDataset` from an IDX image file (N, H, W) and optional label file (N,).
    A ``classes.txt`` beside the label file (one name per line, as ``vaelab generate
    --format idx`` writes it) names the labels, or else EMNIST's ``PREFIX-mapping.txt``
    (:func:`emnist_classes`); without either they are '0', '1', …
    ``transpose`` swaps each image's rows and columns (EMNIST stores its images so)."""
    x = read_idx(images)
    y = None if labels is None else read_idx(labels)
    if y is not None and x.ndim == 1 and y.ndim >= 3:
        raise DataError(f"{images} holds labels {x.shape} and {labels} images {y.shape}: the "
                        "image and label files are swapped")  # fmt: skip
    if transpose:
        if x.ndim != 3:
            raise DataError(f"{images}: transposing needs images (N, H, W), got {x.shape}")
        x = np.ascontiguousarray(x.transpose(0, 2, 1))  # (N, H, W) -> (N, W, H)
    classes: list[str] = []
    names = None if labels is None else Path(labels).with_name("classes.txt")
    if names is not None and names.is_file():
        try:
            text = names.read_text(encoding="utf-8").removesuffix("\n")
        except UnicodeDecodeError as e:
            raise DataError(f"{names}: not UTF-8 text ({e.reason} at byte {e.start})") from e
        classes = [line.removesuffix("\r") for line in text.split("\n")] if text else []
        if y is not None and len(y) and int(y.max()) >= len(classes):
            raise DataError(f"{names} names {len(classes)} classes, but {labels} has label "
                            f"{int(y.max())}")  # fmt: skip
    elif labels is not None and (mapping := _emnist_mapping(Path(labels))) is not None:
        classes = emnist_classes(mapping, 0 if y is None or not len(y) else int(y.max()))
    return from_arrays(x, y, classes, name, f"{images}" + (f" + {labels}" if labels else ""))


SPARSE_LABELS = 16
"""Unnamed labels may leave this many of the classes 0 … max label empty (or as many as are
used, when more): beyond that the labels are not class numbers (a mask, a wrong file)."""


def _check_sparse_labels(y: torch.Tensor, where: str) -> None:
    """Refuse unnamed labels that would make mostly empty classes (labels all 255: 256)."""
    top, used = int(y.max()), len(torch.unique(y))
    if top + 1 - used > max(SPARSE_LABELS, used):
        raise DataError(f"{where}: the labels run to {top} but use only {used} distinct "
                        f"values, so {top + 1 - used} of the classes 0-{top} would be empty; "
                        "labels must number the classes 0, 1, … (or name them in classes.txt)")  # fmt: skip


def _emnist_mapping(labels: Path) -> Path | None:
    """EMNIST's ``emnist-SET-mapping.txt`` for a label file ``emnist-SET-train-labels-…``."""
    for mark in ("-train-labels", "-test-labels"):
        if mark in labels.name:
            mapping = labels.with_name(labels.name[: labels.name.index(mark)] + "-mapping.txt")
            return mapping if mapping.is_file() else None
    return None


def emnist_classes(mapping: Path, max_label: int) -> list[str]:
    """Class names 0 … ``max_label`` (or the mapping's largest label) from an EMNIST mapping
    file: lines of a label and the character codes it stands for ("10 65" is 'A'; letters:
    "1 65 97" is 'Aa'). A label the file leaves out (label 0 of letters) keeps its number."""
    named: dict[int, str] = {}
    try:
        lines = mapping.read_text(encoding="ascii").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            label, *codes = (int(f) for f in line.split())
            if not codes or not 0 <= label < 2**16:
                raise ValueError(f"line {number}: {line!r} is not 'LABEL CODE [CODE]'")
            named[label] = "".join(chr(c) for c in codes)
    except (UnicodeDecodeError, ValueError, OverflowError) as e:  # int('x'), chr(-1), chr(1e20)
        raise DataError(f"{mapping}: not an EMNIST mapping file ({e})") from e
    # every label the mapping knows, so that a split without the last classes has them too
    top = max(max_label, *named) if named else max_label
    names = [named.get(i, str(i)) for i in range(top + 1)]
    if len(set(names)) < len(names):
        raise DataError(f"{mapping} gives two labels the same name")
    return names


def from_arrays(
    images: np.ndarray, labels: np.ndarray | None, classes: list[str], name: str, where: str
) -> ImageDataset:
    """An :class:`ImageDataset` from uint8 ``images`` (N, H, W) or (N, H, W, C) and optional
    integer ``labels`` (N,); without ``classes`` they are named '0' … 'max label'."""
    if images.dtype != np.uint8 or images.ndim not in (3, 4):
        raise DataError(
            f"{where}: images must be uint8 (N, H, W[, C]), got {images.dtype} {images.shape}"
        )
    if images.ndim == 4 and images.shape[3] > 4:  # channels last: 1 (grey) … 4 (RGBA)
        hint = (" — it looks channels-first (N, C, H, W): use images.transpose(0, 2, 3, 1)"
                if images.shape[1] <= 4 else "")  # fmt: skip
        raise DataError(f"{where}: images {images.shape} must be (N, H, W, C) with C <= 4{hint}")
    x = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)  # -> (N, C, H, W)
    y = None
    if labels is not None:
        if labels.shape != (len(x),) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(
                f"{where}: labels must be integers of shape ({len(x)},), got "
                f"{labels.dtype} {labels.shape}"
            )
        y = torch.from_numpy(labels.astype(np.int64))
        if not classes and len(y):
            classes = [str(i) for i in range(int(y.max()) + 1)]
            _check_sparse_labels(y, where)
    try:
        return ImageDataset(torch.from_numpy(np.ascontiguousarray(x)), y, classes, name)
    except DataError as e:
        raise DataError(f"{where}: {e}") from e


def find_idx_splits(folder: Path) -> dict[str, tuple[Path, Path | None]]:
    """Find the train/test IDX pairs in a folder such as torchvision's ``MNIST/raw/``:
    ``[PREFIX-]train-images-idx3-ubyte[.gz]`` and ``t10k-`` or ``test-`` for the test split
    (EMNIST names them ``emnist-digits-train-…``). A folder of several data sets (all of
    EMNIST's) is a DataError that lists them: import one by its files."""
    for sub in (folder, folder / "raw", folder / "MNIST" / "raw"):
        found: dict[str, tuple[Path, Path | None]] = {}
        prefixes: dict[str, str] = {}
        for split, marks in (("train", ("train",)), ("test", ("t10k", "test"))):
            by_prefix: dict[str, tuple[str, Path]] = {}  # data set prefix -> (mark, file)
            for m in marks:  # sorted: a plain file before its .gz (torchvision keeps both)
                for f in sorted(sub.glob(f"*{m}-images*idx3-ubyte*")):
                    by_prefix.setdefault(f.name[: f.name.index(f"{m}-images")], (m, f))
            if len(by_prefix) > 1:
                names = ", ".join(f.name for _, f in by_prefix.values())
                raise DataError(f"{sub} holds the {split} images of several data sets ({names}); "
                                f"import one pair: vaelab data import-idx IMAGES LABELS --split {split}")  # fmt: skip
            for prefix, (m, f) in by_prefix.items():
                labs = sorted(sub.glob(f"{glob.escape(prefix)}{m}-labels*idx1-ubyte*"))
                found[split] = (f, labs[0] if labs else None)
                prefixes[split] = prefix
        if len(set(prefixes.values())) > 1:  # emnist-digits-train with emnist-letters-test
            raise DataError(f"{sub}: the train and test files belong to different data sets "
                            f"({found['train'][0].name}, {found['test'][0].name})")  # fmt: skip
        if found:
            return found
    raise DataError(f"{folder}: no '[PREFIX-]<train|t10k|test>-images-idx3-ubyte[.gz]' files found")


def _bare_pair(folder: Path) -> tuple[Path, Path | None] | None:
    """The one ``images-idx3-ubyte[.gz]`` (and its ``labels-idx1-ubyte[.gz]``) of a folder
    that names no split, as ``vaelab generate --format idx`` writes it; else None."""
    found = sorted(folder.glob("images-idx3-ubyte*"))  # a plain file before its .gz
    if not found:
        return None
    labels = sorted(folder.glob("labels-idx1-ubyte*"))
    return found[0], labels[0] if labels else None


def import_idx(
    name: str,
    images: str | Path,
    labels: str | Path | None = None,
    split: str | None = None,
    cache: str | Path | None = None,
    replace: bool = False,
    transpose: bool = False,
) -> Path:
    """Import IDX files (or a folder of them, e.g. ``MNIST/raw``) as data set ``name``.

    A single image file becomes ``split`` (default train) and is added to the splits the
    data set has (replacing a split of that name only with ``replace``); a folder's splits
    and label files are found by name, so ``labels`` and ``split`` are refused with one.
    ``transpose``: see :func:`idx_dataset`."""
    images = Path(images)
    if images.is_dir() and (bare := _bare_pair(images)) and labels is None:
        images, labels = bare  # a folder `vaelab generate --format idx` wrote: one pair
    if images.is_dir():
        if labels is not None or split is not None:
            raise DataError(f"{images} is a folder: its splits and label files are found by "
                            "name; LABELS and --split go with a single image file")  # fmt: skip
        pairs = find_idx_splits(images)
    else:
        pairs = {split or "train": (images, Path(labels) if labels else None)}
    splits = {s: idx_dataset(i, lab, name, transpose) for s, (i, lab) in pairs.items()}
    return add_splits(name, splits, cache, source=f"IDX {images}", replace=replace)


# --------------------------------------------------------------------------------------
# Image folders and .npz files
# --------------------------------------------------------------------------------------

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def parse_size(text: str) -> tuple[int, int]:
    """'28x28' -> (28, 28) as (height, width); '32' -> (32, 32)."""
    try:
        parts = [int(p) for p in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or min(parts) < 1:
        raise DataError(f"invalid size {text!r}: use HxW such as 28x28")
    return parts[0], parts[1]


def class_folders(folder: Path) -> list[Path]:
    """The sub-folders of ``folder`` that name classes: all but hidden ones (``.git``,
    ``.ipynb_checkpoints``), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _nested_images(folder: Path) -> str:
    """The first sub-folder of ``folder`` (not hidden) holding images at any depth, or ''."""
    for sub in class_folders(folder):
        if any(p.suffix.lower() in IMAGE_SUFFIXES for p in sub.rglob("*")):
            return sub.name
    return ""


def eight_bit(im, path: Path):
    """A Pillow image with 8-bit channels: 16-bit grey (modes I;16*, or I holding values in
    0…65535, as some 16-bit files open) scaled 65535 -> 255, since Pillow's own convert
    clips them to white; other modes as they are. Float images (mode F) have no standard
    range and are a DataError."""
    from PIL import Image

    if im.mode == "F":
        raise DataError(f"{path}: a floating-point image (mode F) has no standard pixel range; "
                        "save it as 8- or 16-bit")  # fmt: skip
    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    a = np.asarray(im).astype(np.int64)  # (H, W)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise DataError(f"{path}: a 32-bit integer image with values {a.min()}…{a.max()} "
                        "(only 16-bit ranges, 0…65535, are read)")  # fmt: skip
    return Image.fromarray(((a * 255 + 32767) // 65535).astype(np.uint8), mode="L")


def folder_files(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[tuple[Path, int]], bool, list[str]]:
    """The images of an image folder in the order they are read, each with its label index
    into ``classes`` (default: the sorted sub-folder names); whether they are labelled (by
    sub-folders); the classes."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    subdirs = class_folders(folder)
    for d in subdirs:  # undecodable bytes in a name arrive as surrogates, unwritable later
        if not d.name.isprintable():
            raise DataError(f"{d}: a class folder's name must be printable UTF-8 text")
    if classes is None:
        classes = [d.name for d in subdirs]
    index = {c: k for k, c in enumerate(classes)}
    if unknown := [d.name for d in subdirs if d.name not in index]:
        raise DataError(f"{folder}: sub-folders {unknown} are not among the classes {classes}")
    groups = [(index[d.name], d) for d in subdirs] or [(0, folder)]
    files: list[tuple[Path, int]] = []
    for k, d in groups:
        if d != folder and (deeper := _nested_images(d)):  # they would be dropped unsaid
            raise DataError(f"{d}: images in sub-folders ({deeper}); a class folder's images "
                            "are read from the folder itself: move them up")  # fmt: skip
        files += [(p, k) for p in sorted(d.iterdir())  # not hidden ones (macOS ._x.png)
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]  # fmt: skip
    return files, bool(subdirs), classes


def folder_dataset(
    folder: str | Path,
    size: tuple[int, int],
    channels: int = 1,
    name: str = "",
    classes: list[str] | None = None,
) -> ImageDataset:
    """Images under ``folder``, labelled by sub-folder name, resized to ``size`` (H, W) and
    converted to ``channels`` (1 = grey, 3 = RGB). The labels index ``classes`` (default:
    the sorted sub-folder names), so splits that lack a class still agree on the others.
    Images directly in ``folder`` are accepted when there are no sub-folders (unlabelled)."""
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3):
        raise DataError(f"channels must be 1 or 3, got {channels}")
    folder = Path(folder)
    files, labelled, classes = folder_files(folder, classes)
    if not files:
        raise DataError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found")
    h, w = size
    check_memory(len(files), h * w * channels)  # before resizing to a size given by the user
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)
    bar = tqdm(files, desc=f"decoding {folder.name or folder}", unit="img", leave=False,
               disable=None if len(files) > 2000 else True)  # fmt: skip
    for i, (p, _) in enumerate(bar):
        try:
            with Image.open(p) as im:
                im = eight_bit(im, p).convert("L" if channels == 1 else "RGB")
                im = im.resize((w, h), Image.BILINEAR)
                out[i] = np.asarray(im, dtype=np.uint8).reshape(h, w, channels)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise DataError(f"{p}: cannot decode image ({e})") from e
    labels = torch.tensor([k for _, k in files]) if labelled else None
    classes = classes if labelled else []
    images = torch.from_numpy(out.transpose(0, 3, 1, 2).copy())  # (N, H, W, C) -> (N, C, H, W)
    return ImageDataset(images, labels, classes, name)


def import_folder(
    name: str,
    folder: str | Path,
    size: tuple[int, int],
    channels: int = 1,
    cache: str | Path | None = None,
    test_fraction: float = 0.1,
    replace: bool = False,
) -> Path:
    """Import an image folder. With ``train/`` and ``test/`` sub-folders, each is a split;
    otherwise a seeded random ``test_fraction`` of the images becomes the ``test`` split and
    the rest ``train`` (training needs held-out images for its test loss). The classes are
    the sub-folder names of all splits together, so a label means one class in every split.
    ``replace`` replaces the whole data set ``name``, not only the splits imported here."""
    if not 0 <= test_fraction < 1:
        raise DataError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    folder = Path(folder)
    split_dirs = {s: folder / s for s in ("train", "test") if (folder / s).is_dir()}
    if not split_dirs:
        split_dirs = {"train": folder}
    classes = sorted({d.name for s in split_dirs.values() for d in class_folders(s)})
    splits = {s: folder_dataset(d, size, channels, name, classes) for s, d in split_dirs.items()}
    if "test" not in splits and test_fraction > 0:
        whole = splits["train"]
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(0))
        n_test = max(1, round(test_fraction * len(whole)))
        if n_test >= len(whole):
            raise DataError(f"{folder}: {len(whole)} images are too few to hold out a test split")
        splits = {"train": whole.subset(order[n_test:].sort().values),
                  "test": whole.subset(order[:n_test].sort().values)}  # fmt: skip
    if replace:  # the whole data set: a kept old test split could hold images now in train
        with writing(name, cache):
            return save_dataset(name, splits, cache, source=f"folder {folder}")
    return add_splits(name, splits, cache, source=f"folder {folder}")


def read_npz(path: str | Path, name: str = "") -> ImageDataset:
    """An ``.npz`` with ``images`` (N, H, W[, C]) uint8 and optional ``labels`` (N,)."""
    path = Path(path)
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a .npy: one bare array
            raise DataError(f"{path}: one bare array, not an .npz archive; write it with "
                            "np.savez(path, images=..., labels=...)")  # fmt: skip
        with loaded as npz:
            if "images" not in npz.files:
                raise DataError(f"{path}: no 'images' array (has {', '.join(npz.files)})")
            x = npz["images"]
            y = npz["labels"] if "labels" in npz.files else None
            names = npz["classes"] if "classes" in npz.files else []
            classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # ValueError: Unicode…
        if isinstance(e, EOFError):  # an empty file (/dev/null)
            raise DataError(f"{path}: empty, not an .npz archive") from e
        if "pickle" in str(e):  # numpy's advice to load it unsafely is never passed on
            raise DataError(f"{path}: not an .npz archive (nor a .npy array)") from e
        raise DataError(f"{path}: cannot read as .npz ({e})") from e
    return from_arrays(x, y, classes, name or path.stem, str(path))


def import_npz(
    name: str,
    path: str | Path,
    split: str = "train",
    cache: str | Path | None = None,
    replace: bool = False,
) -> Path:
    """Import an ``.npz`` file as split ``split`` of data set ``name`` (replacing a split of
    that name only with ``replace``)."""
    splits = {split: read_npz(path, name)}
    return add_splits(name, splits, cache, source=f"npz {path}", replace=replace)
