"""What a training call sets up before its first step: the splits (held out by rows, not
only by name), the resident batches, the seeded model and its optimizer, and the
:class:`Loop` that :mod:`vaelab.train.loop` runs (:func:`setup_loop`)."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.config import Config
from vaelab.data.batches import Batches, derive_seed, heldout_batches, load_split
from vaelab.data.cache import split_rows
from vaelab.data.dataset import ImageDataset
from vaelab.device import resolve_device, resolve_precision, wide_float
from vaelab.errors import CheckpointError, ConfigError, DataError
from vaelab.models.registry import build_model, reads_labels
from vaelab.runs.folder import RunFolder
from vaelab.train.board import Board
from vaelab.train.distributed import (
    SINGLE,
    Dist,
    check_processes,
    checkpoint_copy,
    restore_rank_rng,
)
from vaelab.train.optimizers import make_optimizer
from vaelab.train.state import Progress, restore
from vaelab.train.step import step_function


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


@dataclass
class Member:
    """One model of a training call and what is its own: config, run folder, optimizer,
    progress and the epoch of its last checkpoint."""

    cfg: Config
    run: RunFolder
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    p: Progress
    saved: int | None = None
    best: dict[str, torch.Tensor] | None = None  # keep_best: new best weights, not yet saved
    board: Board | None = None  # train.tensorboard: the run's event writer


@dataclass
class Loop:
    """What one training call shares across its epochs: the members (one model, or several
    fused), the data, the step, the loss sums on the device and the clock, and ``dist``,
    which process this is (rank 0 of 1 unless training runs on several)."""

    cfg: Config  # what all members share: data, model, batches, epochs
    members: list[Member]
    batches: Batches
    train_set: ImageDataset
    test_batches: Batches
    step: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    log: Callable[[str], None]
    progress: bool
    t0: float  # perf_counter of the run's start (earlier sessions included)
    start: tuple[float, float]  # (epochs, seconds) where this call began, for the eta
    sums: torch.Tensor  # (M,) per-member loss sums of the epoch, on the device
    synced: int = 0  # the step of the last host sync
    dist: Dist = SINGLE  # this process's place among the training processes

    @property
    def p(self) -> Progress:
        return self.members[0].p  # epoch, batch and step are the same for all members


def setup_loop(cfgs, runs, resume, cache, progress, log, dist: Dist = SINGLE) -> Loop:
    """The data resident on the device (shared), the seeded models and optimizers, and for
    ``resume`` the state of the checkpoints to continue; nothing is written yet. On several
    processes each rank checks that all hold the same config and data, seeds its own
    training stream, and takes its share of every batch."""
    for run in runs:
        if run.writer and not resume and run.file("state.json").exists():
            raise CheckpointError(
                f"{run.path} already holds a run; continue it with `vaelab train --resume {run.path}`, or choose another --out"
            )
    cfg = cfgs[0]
    batches, train_set, test_set = setup_data(cfg, cache, also=cfgs[1:], dist=dist)
    if dist.on:
        check_processes(dist, cfg, train_set, test_set, len(cfgs))
    members = [Member(c, run, *setup_model(c, batches.device), Progress()) for c, run in zip(cfgs, runs, strict=True)]  # fmt: skip
    if dist.on:  # the same initial weights everywhere, then a training stream per rank
        torch.manual_seed(derive_seed(cfg.train.seed, f"torch:rank{dist.rank}"))
    # the test split is binarised once with a fixed seed, the same for every run
    test_batches = heldout_batches(test_set, cfg.data.binarize, 2048, batches.device,
                                   (dist.rank, dist.world_size))  # fmt: skip
    if resume:
        for m in members:
            source, tmp = checkpoint_copy(dist, m.run)
            try:
                m.p = restore(source, m.model, m.optimizer, batches, log)
                ranks = source.read_state()["rng"].get("ranks")
            finally:
                if tmp is not None:
                    shutil.rmtree(tmp, ignore_errors=True)
            if dist.on or ranks:  # per-rank RNG states back, or a note that they cannot be
                restore_rank_rng(dist, ranks, batches.device, log, cfg.train.seed, m.p.step)
            m.saved = m.p.epoch
    step = step_function([m.model for m in members], [m.optimizer for m in members],
                         cfg.train.compile, log, cfg.train.precision, dist,
                         lambda: batches.global_len)  # fmt: skip
    p = members[0].p
    if any((m.p.epoch, m.p.batch) != (p.epoch, p.batch) for m in members):
        raise CheckpointError("runs trained together must stand at the same epoch and batch")
    # where this call began (in epochs, a resumed part-epoch counted in part), for the eta
    start = (p.epoch + p.batch / len(batches), p.seconds)
    sums = torch.zeros(len(members), dtype=wide_float(batches.device), device=batches.device)
    return Loop(cfg, members, batches, train_set, test_batches, step, log, progress,
                time.perf_counter() - p.seconds, start, sums, p.step, dist)  # fmt: skip
