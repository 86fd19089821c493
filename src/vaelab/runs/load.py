"""A trained model from its run folder, and the split it was tested on."""

from __future__ import annotations

from pathlib import Path

import torch

from vaelab.config import Config
from vaelab.data.batches import Batches, heldout_batches, load_split
from vaelab.device import resolve_device
from vaelab.models.registry import build_model
from vaelab.runs.folder import RunFolder
from vaelab.runs.stages import load_stages


def load_run(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Config, torch.nn.Module]:
    """The config and trained model of a run folder (in eval mode), with the stages the
    folder holds loaded (an autoencoder's ex-post Gaussian, …)."""
    device = resolve_device(str(device), "device")
    run = RunFolder(path, writer=False)
    cfg = run.read_config()
    model = build_model(cfg.model, cfg.train.loss)
    state = run.read_state()
    run.load_weights(model, state)
    model = model.to(device).eval()
    load_stages(run, model, state)
    return cfg, model


def load_test_batches(
    cfg: Config,
    cache: str | Path | None = None,
    limit: int = 0,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
) -> Batches:
    """The test split of a run's data set (its first ``limit`` images, 0 = all) as fixed
    batches, binarised as the run's test loss was; images of another shape are a DataError."""
    test = load_split(cfg.data.name, cfg.data.test_split, cache, limit, cfg.model.image_shape)
    return heldout_batches(test, cfg.data.binarize, batch_size, device)
