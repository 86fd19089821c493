"""Running a model's stages (:mod:`vaelab.models.stages`) in a run folder: fit what is
missing, write each into the folder (hashed in ``state.json``), load what is there."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.config import Config
from vaelab.data.batches import heldout_batches, load_split
from vaelab.errors import ConfigError
from vaelab.models.registry import build_model
from vaelab.models.stages import StageData
from vaelab.runs.folder import RunFolder


def stage_data(cfg: Config, cache=None, device="cpu", limit: int | None = None) -> StageData:
    """A stage's view of a run's data: its training split on ``device``, binarised once
    (with the fixed seed held-out splits use) when the run trained on binarised images;
    ``limit`` caps the images every stage reads."""

    def train_images(n: int):
        limit = n if cap is None else min(n, cap)
        train = load_split(cfg.data.name, cfg.data.split, cache, limit, cfg.model.image_shape,
                           cfg.data.only_classes)  # fmt: skip
        batches = heldout_batches(train, cfg.data.binarize, len(train), device)
        return next(iter(batches))[0]  # (N, C, H, W) in [0, 1]

    cap = limit
    return StageData(train_images)


def load_stages(run: RunFolder, model, state: dict | None = None) -> list[str]:
    """Load every stage of ``model`` that the run folder holds; returns the missing names."""
    state = run.read_state() if state is None else state
    missing = []
    for stage in model.stages:
        tensors = run.load_stage(stage.name, state)
        if tensors is None:
            missing.append(stage.name)
        else:
            stage.load(model, {k: v.to(_device(model)) for k, v in tensors.items()})
    return missing


def run_stages(
    run: RunFolder,
    cfg: Config,
    model,
    cache: str | Path | None = None,
    log: Callable[[str], None] = print,
    names: list[str] | None = None,
    redo: bool = False,
    limit: int | None = None,
) -> list[str]:
    """Fit the stages of ``model`` (all, or ``names``) that the folder lacks (all of them
    with ``redo``), each written as it finishes; returns the names fitted. A read-only
    folder (``run.writer`` False) fits them in memory only. ``limit``: at most that many
    training images for each."""
    known = [s.name for s in model.stages]
    if unknown := [n for n in names or [] if n not in known]:
        raise ConfigError(f"{run.path} has no stage {unknown[0]!r} (its stages: "
                          f"{', '.join(known) or 'none'})")  # fmt: skip
    missing = known if redo else load_stages(run, model)
    todo = [s for s in model.stages if s.name in missing and (names is None or s.name in names)]
    data = stage_data(cfg, cache, _device(model), limit)
    for stage in todo:
        log(f"{run.path}: fitting stage {stage.name}")
        model.eval()
        tensors = stage.fit(model, data)
        run.save_stage(stage.name, tensors)
    return [s.name for s in todo]


def finish_stages(
    path: str | Path,
    cache: str | Path | None = None,
    log: Callable[[str], None] = print,
    names: list[str] | None = None,
    redo: bool = False,
    limit: int | None = None,
) -> list[str]:
    """:func:`run_stages` on the trained model of run folder ``path``, under its lock: the
    stages it lacks (cut off after its last epoch, or a folder from before stages existed),
    or with ``redo`` all of them anew; returns the names fitted."""
    run = RunFolder(path)
    cfg = run.read_config()
    model = build_model(cfg.model, cfg.train.loss)
    recorded = RunFolder(path, writer=False).read_state().get("stages", {})
    if not redo and not names and all(s.name in recorded for s in model.stages):
        return []  # nothing to fit: no lock taken, nothing written
    with run.held():
        state = run.read_state()
        run.load_weights(model, state, run.kept_weights(cfg, state))
        return run_stages(run, cfg, model, cache, log, names, redo, limit)


def _device(model):
    return next((t.device for t in model.parameters()), None) or "cpu"
