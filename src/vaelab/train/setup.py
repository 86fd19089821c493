"""What a training call sets up before its first step: the splits (held out by rows, not
only by name), the resident batches, the seeded model and its optimizer."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from vaelab.config import Config
from vaelab.data.batches import Batches, derive_seed, load_split
from vaelab.data.cache import split_rows
from vaelab.data.dataset import ImageDataset
from vaelab.device import resolve_device, resolve_precision
from vaelab.errors import ConfigError, DataError
from vaelab.models.registry import build_model, reads_labels
from vaelab.train.distributed import SINGLE, Dist
from vaelab.train.optimizers import make_optimizer


def load_splits(cfg: Config, cache: str | Path | None = None) -> tuple[ImageDataset, ImageDataset]:
    """The (limited) training and test splits of ``cfg.data``; both must hold images of one
    shape, and of ``cfg.model.image_shape`` when that is filled in (a resumed run)."""
    d = cfg.data
    only = d.only_classes
    train = load_split(d.name, d.split, cache, d.limit, cfg.model.image_shape, only)
    test = load_split(d.name, d.test_split, cache, d.test_limit, train.image_shape, only)
    # held out means other rows, not only another split name (MNIST's valid is in its train)
    (a, a0, ae), (b, b0, be) = (split_rows(d.name, s, cache) for s in (d.split, d.test_split))
    a1, b1 = a0 + len(train), b0 + len(test)  # a limit takes a split's first rows
    if only:  # the kept classes' images lie anywhere in their split
        a1, b1 = ae, be
    if a == b and a0 < b1 and b0 < a1:
        raise ConfigError(
            f"data.split {d.split!r} and data.test_split {d.test_split!r} share "
            f"{min(a1, b1) - max(a0, b0):,} images ({d.name!r} {a!r} rows {max(a0, b0):,}-"
            f"{min(a1, b1):,}): the test loss must come from held-out images"
        )
    return train, test


def _classes(cfg: Config, train_set: ImageDataset, test_set: ImageDataset) -> list[str]:
    """The training split's class names, for a model that reads labels; both splits must be
    labelled, the test labels within those classes."""
    for split, ds in ((cfg.data.split, train_set), (cfg.data.test_split, test_set)):
        if ds.labels is None:
            raise DataError(
                f"{cfg.model.kind} training needs labels; split {split!r} of {cfg.data.name} "
                "has none"
            )
    classes = list(train_set.classes)
    n = min(len(classes), len(test_set.classes))  # one may name more classes than the other
    if list(test_set.classes[:n]) != classes[:n]:
        raise DataError(
            f"the splits {cfg.data.split!r} and {cfg.data.test_split!r} of {cfg.data.name} "
            f"name their classes differently ({_few(classes)} vs {_few(test_set.classes)}), "
            "so a label would not mean one class; import both with the same class names "
            "(import-folder with train/ and test/, an .npz's classes, a classes.txt)"
        )
    top = int(test_set.labels.max()) if len(test_set.labels) else -1
    if top >= len(classes):
        raise DataError(
            f"split {cfg.data.test_split!r} of {cfg.data.name} has label {top}, but the "
            f"training split {cfg.data.split!r} has {len(classes)} classes"
        )
    return classes


def _few(names: Sequence[str], n: int = 5) -> str:
    """'a, b, c … (12)': the first few of a list of names, for messages."""
    return ", ".join(names[:n]) + (f" … ({len(names)})" if len(names) > n else "")


def setup_data(
    cfg: Config, cache: str | Path | None = None, also: Sequence[Config] = (), dist: Dist = SINGLE
) -> tuple[Batches, ImageDataset, ImageDataset]:
    """The training batches (on ``cfg.train.device``, seeded by ``cfg.train.seed``; on
    several processes this rank's share of each, on its own GPU), the training split and
    the test split. Fills in ``cfg.model.image_shape`` (and ``classes``) from the data, and
    the same into the configs ``also`` (models trained on this data)."""
    device = resolve_device(cfg.train.device)
    if dist.on and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_set, test_set = load_splits(cfg, cache)
    cfg.model.image_shape = list(train_set.image_shape)
    if reads_labels(cfg.model):
        cfg.model.classes = _classes(cfg, train_set, test_set)
    for other in also:
        other.model.image_shape, other.model.classes = cfg.model.image_shape, cfg.model.classes
    for c in (cfg, *also):  # "auto" becomes what this device runs natively, recorded in the run
        c.train.precision = resolve_precision(
            c.train.precision, device, _warn if dist.main else None
        )
    batches = Batches(train_set, cfg.train.batch_size, True, cfg.train.seed, cfg.data.binarize,
                      device=device, shard=(dist.rank, dist.world_size))  # fmt: skip
    return batches, train_set, test_set


def _warn(message: str) -> None:
    print(f"vaelab: {message}", file=sys.stderr, flush=True)


def setup_model(cfg: Config, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """The model, initialised from ``cfg.train.seed`` (which then seeds its sampling), and
    its optimizer; ``cfg.model.image_shape`` must be filled in."""
    torch.manual_seed(derive_seed(cfg.train.seed, "torch"))
    model = build_model(cfg.model, cfg.train.loss).to(device)
    try:
        optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    except ValueError as e:
        raise ConfigError(f"train.optimizer: {e}") from e
    return model, optimizer
