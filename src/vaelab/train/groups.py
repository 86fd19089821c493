"""Training several runs at once: a sweep's runs or the thesis's Adam/AMSGrad pairs, kept,
continued, fused into one vmapped step (:class:`~vaelab.train.fused.Fused`) or trained one by one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vaelab.config import FILLED_IN, RESUME_OVERRIDES, Config, differences
from vaelab.device import resolve_device
from vaelab.errors import ConfigError
from vaelab.models.registry import check_unused, family
from vaelab.runs.folder import RunFolder
from vaelab.runs.stages import finish_stages
from vaelab.train.loop import TrainingDiverged, TrainingInterrupted, train, train_runs
from vaelab.train.state import finished, read_progress, stretched_schedule

FUSABLE = ("optimizer", "lr", "lr_decay")
"""The train.* fields in which models trained together (:func:`train_many`) may differ."""


def unfusable(cfgs: list[Config]) -> str | None:
    """Why ``cfgs`` cannot be trained in one fused step, or None if they can: same data,
    model and training settings except :data:`FUSABLE`, and no early stopping."""
    first = cfgs[0]
    if not family(first.model).fusable:
        return f"model.kind = {first.model.kind!r} cannot train fused"
    for cfg in cfgs[1:]:
        changed = [
            d.split(":")[0] for d in differences(first, cfg, tuple(f"train.{f}" for f in FUSABLE))
        ]
        if any(not key.startswith("train.") for key in changed):
            return "fused runs need the same [data] and [model] settings"
        if changed:
            diff = [key.removeprefix("train.") for key in changed]
            return f"fused runs may differ only in train.{{{','.join(FUSABLE)}}}, not in {diff}"
    if first.train.early_stopping:
        return "fused runs cannot stop early one by one (train.early_stopping must be 0)"
    return None


def train_many(
    cfgs: list[Config],
    outs: list[str | Path],
    resume: bool = False,
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Train same-shaped models, which differ only in optimizer, lr or lr_decay, together in
    one fused step (:class:`~vaelab.train.fused.Fused`), each into its own run folder as
    :func:`train` would; ``resume`` continues them all, which must stand at the same step."""
    if len(cfgs) != len(outs) or not cfgs:
        raise ValueError("train_many needs one output folder per config")
    why = unfusable(cfgs)
    if why:
        raise ConfigError(why)
    return train_runs(cfgs, [Path(o) for o in outs], resume, cache, progress, log, True)


FUSE_MODES = ("auto", "on", "off")
"""When :func:`train_group` fuses: "auto" on accelerators only (on a CPU the fused step
measured 0.81-0.97x the speed of stepping models in turn), "on" always, "off" never."""


def fuses(mode: str, cfg: Config) -> bool:
    """Whether fuse ``mode`` fuses runs of ``cfg`` (see :data:`FUSE_MODES`)."""
    if mode not in FUSE_MODES:
        raise ConfigError(f"fuse must be one of {', '.join(FUSE_MODES)}, got {mode!r}")
    return mode == "on" or (mode == "auto" and resolve_device(cfg.train.device).type != "cpu")


def train_group(
    cfgs: list[Config],
    outs: list[str | Path],
    cache: str | Path | None = None,
    progress: bool = True,
    fuse: str = "auto",
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Bring each run ``outs[i]`` of config ``cfgs[i]`` to its end: finished (or early
    stopped) runs are kept, started ones continue, and the rest train together in one fused
    step (:func:`train_many`) when ``fuse`` says so (:func:`fuses`), :func:`unfusable` finds
    nothing and they stand at the same step; otherwise one by one. A run that diverges keeps its last good
    checkpoint and the others go on; :class:`TrainingDiverged` at the end names it. A run
    folder that holds a run of another config (beyond :data:`RESUME_OVERRIDES`) is a
    ConfigError. Used by sweeps and the thesis reproduction."""
    if len(cfgs) != len(outs) or not cfgs:
        raise ValueError("train_group needs one output folder per config, and at least one")
    outs = [Path(o) for o in outs]
    fuse_on = fuses(fuse, cfgs[0])
    failed: dict[Path, str] = {}
    for cfg in cfgs:  # a sweep trains one by one: refuse a bad combination before any trains
        check_unused(cfg.model)
    for cfg, out in zip(cfgs, outs, strict=True):
        state = run_state(cfg, out)  # checks every stored config before anything trains
        if state and finished(cfg, state):
            log(f"{out}: already trained, kept")
            finish_stages(out, cache, log)  # cut off before them, or a folder from before stages
        elif state and (warning := stretched_schedule(RunFolder(out).read_config(), cfg)):
            log(f"{out}: {warning}")
    try:
        while True:
            todo = [(c, o, s) for c, o, s in zip(cfgs, outs, map(run_state, cfgs, outs), strict=True)
                    if o not in failed and not (s and finished(c, s))]  # fmt: skip
            if not todo:
                break
            points = {(s["epoch"], s["batch"]) if s else None for _, _, s in todo}
            why = unfusable([c for c, _, _ in todo]) if len(todo) > 1 else "one run"
            if fuse_on and why is None and len(points) == 1:  # all new, or all at the same step
                try:
                    train_many([c for c, _, _ in todo], [o for _, o, _ in todo], todo[0][2] is not None,
                               cache, progress, log)  # fmt: skip
                    break
                except TrainingDiverged as e:  # drop that run, continue the others
                    failed[e.run or todo[0][1]] = str(e)
                    log(f"{e}; the other runs go on")
                    continue
            if fuse_on and len(todo) > 1:
                log(f"training one by one: {why or 'the runs stand at different steps'}")
            for cfg, out, state in todo:
                try:
                    train(cfg, out=out, resume=out if state else None, cache=cache,
                          progress=progress, log=log)  # fmt: skip
                except TrainingDiverged as e:
                    failed[out] = str(e)
                    log(f"{e}; the other runs go on")
            break
    except TrainingInterrupted as e:  # the advice is the whole job's, not one run's
        where = str(e).split("; checkpoint saved")[0]
        raise TrainingInterrupted(
            f"{where}; checkpoints saved: run the same command again to continue every run"
        ) from e
    if failed:
        raise TrainingDiverged(
            f"{len(failed)} of {len(outs)} runs diverged (the others finished): "
            + "; ".join(failed.values())
        )
    return outs


def run_state(cfg: Config, out: Path) -> dict | None:
    """The saved state of run folder ``out`` (None if it holds no checkpoint); the run must
    have been trained with ``cfg``, up to :data:`RESUME_OVERRIDES`."""
    run = RunFolder(out)
    if not run.file("state.json").exists():
        return None
    changed = differences(run.read_config(), cfg, RESUME_OVERRIDES + FILLED_IN)
    if changed:
        raise ConfigError(
            f"{out} holds a run of another config ({'; '.join(changed)}); use another --out"
        )
    return read_progress(run)
