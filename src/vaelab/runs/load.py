"""A trained model from its run folder, and the split it was tested on."""

from __future__ import annotations

from pathlib import Path

import torch

from vaelab.config import Config
from vaelab.data.batches import Batches, heldout_batches, load_split
from vaelab.data.cache import split_rows
from vaelab.device import resolve_device
from vaelab.models.registry import build_model
from vaelab.runs.folder import RunFolder
from vaelab.runs.stages import load_stages


def load_run(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Config, torch.nn.Module]:
    """The config and trained model of a run folder (in eval mode): the best test-loss
    epoch's weights when it trained with ``train.keep_best``, else the last epoch's; with
    the stages the folder holds loaded (an autoencoder's ex-post Gaussian, …)."""
    device = resolve_device(str(device), "device")
    run = RunFolder(path, writer=False)
    cfg = run.read_config()
    model = build_model(cfg.model, cfg.train.loss)
    state = run.read_state()
    run.load_weights(model, state, run.kept_weights(cfg, state))
    model = model.to(device).eval()
    load_stages(run, model, state)
    return cfg, model


def seen_in_training(cfg: Config, split: str, cache: str | Path | None = None) -> bool:
    """Whether images of ``split`` were among the run's training images (the split itself, or
    rows of the same stored split: MNIST's valid is rows 50,000-60,000 of train)."""
    base, lo, hi = split_rows(cfg.data.name, split, cache)
    t_base, t_lo, t_hi = split_rows(cfg.data.name, cfg.data.split, cache)
    if cfg.data.limit:
        t_hi = min(t_hi, t_lo + cfg.data.limit)
    return base == t_base and lo < t_hi and t_lo < hi


def load_test_batches(
    cfg: Config,
    cache: str | Path | None = None,
    limit: int = 0,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    split: str | None = None,
) -> Batches:
    """The test split of a run's data set (or ``split``; its first ``limit`` images, 0 = all)
    as fixed batches, binarised as the run's test loss was; images of another shape are a
    DataError."""
    split = split or cfg.data.test_split
    test = load_split(cfg.data.name, split, cache, limit, cfg.model.image_shape,
                      cfg.data.only_classes)  # fmt: skip
    return heldout_batches(test, cfg.data.binarize, batch_size, device)
