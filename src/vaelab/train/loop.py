"""The training loop: resident-data batches, an optimizer by name, per-example losses
reduced once, checkpoints that resume bit for bit, stages fitted after the last epoch.

Read :func:`train_runs` top to bottom: set up (:func:`~vaelab.train.setup.setup_loop`), the first writes
(:func:`begin`), then per epoch :func:`run_epoch` and :func:`end_of_epoch`. Everything they
share is one :class:`Loop`; everything written goes through a
:class:`~vaelab.runs.folder.RunFolder`, so only one process writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaelab.config import Config, to_dict
from vaelab.errors import ConfigError, VaelabError
from vaelab.eval.common import mean_terms, sum_terms
from vaelab.runs.folder import RunFolder
from vaelab.runs.stages import finish_stages, run_stages
from vaelab.train.board import Board, summary_writer_class
from vaelab.train.distributed import (
    SINGLE,
    Dist,
    all_sum,
    any_rank,
    broadcast_bytes,
    rank_rng_states,
    reduce_terms,
)
from vaelab.train.setup import Loop, Member, setup_loop
from vaelab.train.signals import deferred_interrupts
from vaelab.train.state import (
    check_config,
    checkpoint_state,
    finished,
    read_progress,
)


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite; ``run`` is the run folder it happened in."""

    def __init__(self, message: str, run: Path | None = None):
        super().__init__(message)
        self.run = run


class TrainingInterrupted(VaelabError):
    """Ctrl-C (or SIGTERM) during training; a checkpoint was saved."""


def train(
    cfg: Config,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    writer: bool = True,
    dist: Dist = SINGLE,
) -> Path:
    """Train the model ``cfg`` describes into run folder ``out`` (or continue ``resume``).

    Returns the run folder. Raises :class:`TrainingDiverged` on a NaN/inf loss (the last
    good checkpoint stays) and :class:`TrainingInterrupted` on Ctrl-C or SIGTERM (after
    saving at the next batch boundary; a second Ctrl-C stops at once, without saving).
    ``dist``: this process's place when training on several (:mod:`.distributed`); only
    rank 0 reads and writes the run folder, prints and shows progress.
    """
    path = Path(resume or out or _default_out(cfg))
    writer, progress = writer and dist.main, progress and dist.main
    log = log if dist.main else _silent
    state = None
    if resume is not None:
        held = dist.main and RunFolder(path).file("state.json").exists()
        state = read_progress(RunFolder(path)) if held else None
        if dist.on:  # the other ranks learn rank 0's state (they may have no folder)
            text = json.dumps(state).encode() if state is not None else None
            state = json.loads(broadcast_bytes(dist, text) or "null")
        if state is None and dist.main:
            RunFolder(path, writer=False).read_state()  # says why there is nothing to continue
    if state is not None:
        check_config(state, cfg, path, log)
        if cfg.train.epochs < state["epoch"]:
            raise ConfigError(f"train.epochs = {cfg.train.epochs} is below the {state['epoch']} "
                              f"epochs {path} has done")  # fmt: skip
        if finished(cfg, state):
            early = state["epoch"] < cfg.train.epochs  # so it stopped early
            how, key = ("stopped early", "early_stopping") if early else ("trained", "epochs")
            log(f"{path}: already {how} ({state['epoch']}/{cfg.train.epochs} epochs); nothing to "
                f"do (--set train.{key}=… goes on)")  # fmt: skip
            if writer:  # a finished run lacks no stage (cut off before them, or an old folder)
                finish_stages(path, cache, log)
            return path
    return train_runs([cfg], [path], resume is not None, cache, progress, log, writer, dist)[0]


def _silent(line: str) -> None:
    """The log of ranks other than 0."""


def train_runs(
    cfgs: list[Config],
    outs: list[Path],
    resume: bool,
    cache: str | Path | None,
    progress: bool,
    log: Callable[[str], None],
    writer: bool,
    dist: Dist = SINGLE,
) -> list[Path]:
    """:func:`train` for one config, :func:`~vaelab.train.groups.train_many` for several
    (fused). Each folder is held (:meth:`~vaelab.runs.folder.RunFolder.held`) before its
    state is read, so a second process on it is refused before it reads or writes anything.
    After the last epoch, each model's stages are fitted (:mod:`vaelab.runs.stages`), by
    rank 0 when training on several processes (``dist``)."""
    runs = [RunFolder(o, writer=writer) for o in outs]
    if len({r.path.resolve() for r in runs}) < len(runs):
        raise ConfigError(f"runs trained together need a folder each, got {[str(o) for o in outs]}")
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(run.held())
        loop = setup_loop(cfgs, runs, resume, cache, progress, log, dist)
        with deferred_interrupts() as interrupted:
            begin(loop, resume)
            for m in loop.members:
                if m.board is not None:
                    held.callback(m.board.close)
            for epoch in range(loop.p.epoch, loop.cfg.train.epochs):
                run_epoch(loop, epoch, interrupted)
                if end_of_epoch(loop, epoch):
                    break
                halt_if(loop, interrupted())
        for m in loop.members if writer else ():
            if m.cfg.train.keep_best:  # the stages fit the model that is kept
                state = m.run.read_state()
                m.run.load_weights(m.model, state, m.run.kept_weights(m.cfg, state))
            run_stages(m.run, m.cfg, m.model, cache, log)
    return [r.path for r in runs]


def begin(loop: Loop, resume: bool) -> None:
    """The first writes: each run folder's metrics (cut back to its checkpoint when
    resuming) and config, and one line saying what trains; the TensorBoard writers."""
    if any(m.cfg.train.tensorboard for m in loop.members):
        summary_writer_class()  # missing package: one line before anything is written
    for m in loop.members:
        if resume:
            m.run.reset_metrics(upto_epoch=m.p.epoch)
            loop.log(f"resuming {m.run.path} at epoch {m.p.epoch}, step {m.p.step}")
        elif m.run.writer:  # on several processes only rank 0 touches the folder
            m.run.path.mkdir(parents=True, exist_ok=True)
            m.run.reset_metrics()
        m.run.write_config(m.cfg)
        if m.cfg.train.tensorboard and m.run.writer:
            m.board = Board(m.run.path, m.p.epoch, m.cfg.train.tensorboard_images)
    cfg, n = loop.cfg, len(loop.members)
    n_params = sum(t.numel() for t in loop.members[0].model.parameters())
    loop.log(f"training {cfg.model.kind}/{cfg.model.arch} ({n_params:,} parameters"
             f"{f', {n} models fused' if n > 1 else ''}) on {len(loop.train_set):,} "
             f"{cfg.data.name} images -> {', '.join(str(m.run.path) for m in loop.members)}")  # fmt: skip


def run_epoch(loop: Loop, epoch: int, interrupted: Callable[[], bool]) -> None:
    """The steps of one epoch (from the batch a resumed run stood at), with the loss sums
    kept on the device and read every :data:`SYNC_EVERY` steps."""
    p, members, batches = loop.p, loop.members, loop.batches
    for m in members:
        m.model.train()
        if hasattr(m.model, "begin_epoch"):  # a family whose training has phases (vq_vae)
            m.model.begin_epoch(epoch, m.cfg.train.epochs)
        for group in m.optimizer.param_groups:
            group["lr"] = epoch_lr(m.cfg, epoch)
    # on several processes rank 0 carries the sum so far, the others their own batches only
    sums = [m.p.train_sum if loop.dist.main else 0.0 for m in members]
    loop.sums.copy_(torch.tensor(sums, dtype=loop.sums.dtype))
    bar = tqdm(batches.epoch(skip=p.batch), total=len(batches), initial=p.batch,
               desc=f"epoch {epoch + 1}/{loop.cfg.train.epochs}", leave=False, unit="batch",
               disable=None if loop.progress else True)  # fmt: skip
    for x, y in bar:
        losses = loop.step(x, y)  # (M, B) per-example losses, parameters updated
        loop.sums += losses.detach().sum(dim=1, dtype=loop.sums.dtype)  # (M, B) -> (M,)
        for m in members:
            m.p.batch += 1
            m.p.step += 1
        if p.batch % SYNC_EVERY == 0:
            sync(loop)
            seen = min(p.batch * batches.batch_size, len(loop.train_set))
            bar.set_postfix(loss="/".join(f"{m.p.train_sum / seen:.4g}" for m in members))
        if p.batch < len(batches):  # after the last batch: stop once the epoch is done
            halt_if(loop, interrupted())
    sync(loop)


def end_of_epoch(loop: Loop, epoch: int) -> bool:
    """Test loss and its terms, metrics, checkpoint; returns whether early stopping ends the
    run. Every test loss is checked before anything is written."""
    cfg, members = loop.cfg, loop.members
    tested = (epoch + 1) % cfg.train.test_every == 0 or epoch + 1 == cfg.train.epochs
    seed = cfg.train.seed
    terms = [test_terms(loop, m.model, seed) if tested else None for m in members]
    for m, t in zip(members, terms, strict=True):
        if t is not None and not math.isfinite(t["loss"]):
            raise diverged(loop, f"test loss is {t['loss']} after epoch {epoch + 1}", m)
    stop = False
    for m, t in zip(members, terms, strict=True):
        test_loss = None if t is None else t["loss"]
        q = m.p
        train_loss = q.train_sum / len(loop.train_set)
        q.epoch, q.batch, q.train_sum = epoch + 1, 0, 0.0
        same = cfg.train.lr > 0 and math.isclose(train_loss, q.last_train, rel_tol=FLAT)
        q.flat, q.last_train = (q.flat + 1 if same else 0), train_loss
        q.seconds = time.perf_counter() - loop.t0
        # stale: epochs since the best test loss so far
        improved = test_loss is not None and test_loss < q.best
        q.best, q.stale = (test_loss, 0) if improved else (q.best, q.stale + 1)
        if improved and cfg.train.keep_best:  # written with the next checkpoint
            m.best = {k: v.detach().clone() for k, v in m.model.state_dict().items()}
        # models: how many trained in this step (> 1: fused; then seconds are shared)
        record = {"epoch": q.epoch, "step": q.step, "train_loss": train_loss,
                  "test_loss": test_loss, "seconds": round(q.seconds, 3), "models": len(members)}  # fmt: skip
        if t is not None and len(t) > 1:  # the objective's parts, test-set means
            record["test_terms"] = {k: v for k, v in t.items() if k != "loss"}
        m.run.append_metrics(record)
        if m.board is not None:
            m.board.epoch(record, epoch_lr(m.cfg, epoch), m.model, lambda: first_test(loop))
        log_epoch(loop, m, train_loss, test_loss)
        patience = cfg.train.early_stopping
        stop = q.stopped = bool(tested and patience and q.stale >= patience)
        if q.epoch == cfg.train.epochs or stop or q.epoch % cfg.train.checkpoint_every == 0:
            checkpoint(loop, m)
    for m in members:
        if m.p.flat >= SATURATED:
            raise diverged(loop, f"the training loss has stayed at {m.p.last_train:.6g} for "
                           f"{m.p.flat + 1} epochs (to {FLAT:g}), although train.lr = "
                           f"{m.cfg.train.lr:g}: the network has saturated and no longer learns "
                           "(a smaller train.lr may help)", m)  # fmt: skip
    if stop:  # only ever one member: fused runs do not stop early
        loop.log(f"early stopping: no better test loss for {loop.p.stale} epochs")
    return stop


def first_test(loop: Loop, n: int = 8) -> tuple:
    """The first ``n`` test images and their labels (for the reconstruction grids)."""
    x, y = next(iter(loop.test_batches))
    return x[:n], None if y is None else y[:n]


def log_epoch(loop: Loop, m: Member, train_loss: float, test_loss: float | None) -> None:
    """One line per epoch and member: losses, time, and the eta of this call's pace."""
    q, epochs = m.p, loop.cfg.train.epochs
    name = f"{m.run.path.name}: " if len(loop.members) > 1 else ""
    shown = "   -   " if test_loss is None else f"{test_loss:.4f}"
    left = epochs - q.epoch
    done = q.epoch - loop.start[0]  # epochs in this call; 0 when resumed at an epoch's end
    pace = (q.seconds - loop.start[1]) / done if done > 0 else math.nan  # s/epoch
    eta = f"  eta {hms(pace * left)}" if left else ""
    loop.log(f"{name}epoch {q.epoch:>4}/{epochs}  train {train_loss:.4f}  test {shown}  "
             f"{q.seconds:7.1f}s{eta}")  # fmt: skip


def sync(loop: Loop) -> None:
    """Copy the device-side loss sums into the members' progress: the one host sync, every
    :data:`SYNC_EVERY` steps and at checkpoints."""
    p = loop.p
    for m, total in zip(loop.members, all_sum(loop.dist, loop.sums).tolist(), strict=True):
        m.p.train_sum = total
        if not math.isfinite(total):
            raise diverged(loop, f"loss is {total} at epoch {p.epoch + 1} (within steps "
                                 f"{loop.synced + 1}-{p.step})", m)  # fmt: skip
    loop.synced = p.step


def checkpoint(loop: Loop, m: Member, mid_epoch: bool = False) -> None:
    """Save where ``m`` stands; on several processes every rank's RNG states go with it."""
    state = checkpoint_state(m.p, loop.batches, mid_epoch)
    state["config"] = to_dict(m.cfg)  # what the run trains under, checked on resume
    if loop.dist.on:
        state["rng"]["ranks"] = rank_rng_states(loop.dist, loop.batches.device)
    m.run.save_checkpoint(m.model, m.optimizer, state, best=m.best)
    m.saved, m.best = m.p.epoch, None


def test_terms(loop: Loop, model, seed: int) -> dict[str, float]:
    """The test-set means of the objective's terms (each rank's share, summed over ranks)."""
    if not loop.dist.on:
        return mean_terms(model, loop.test_batches, seed=seed)
    return reduce_terms(loop.dist, *sum_terms(model, loop.test_batches, seed=seed))


def diverged(loop: Loop, what: str, m: Member) -> TrainingDiverged:
    kept = (
        "no checkpoint was written yet"
        if m.saved is None
        else f"the last good checkpoint (epoch {m.saved}) is kept in {m.run.path}"
    )
    where = f"{m.run.path}: " if len(loop.members) > 1 else ""
    return TrainingDiverged(f"{where}{what}; stopped. {kept}", m.run.path)


def halt_if(loop: Loop, requested: bool) -> None:
    """On Ctrl-C or SIGTERM (to any rank): checkpoint where training stands, then stop."""
    if not any_rank(loop.dist, requested):
        return
    p = loop.p
    sync(loop)  # never checkpoints a diverged model
    for m in loop.members:
        m.p.seconds = time.perf_counter() - loop.t0
        checkpoint(loop, m, mid_epoch=p.batch > 0)
    if p.epoch == loop.cfg.train.epochs:  # the signal came as the last epoch ended
        raise TrainingInterrupted(f"interrupted as training ended (epoch {p.epoch} of "
                                  f"{p.epoch}); checkpoint saved, the run is finished")  # fmt: skip
    how = (f"`vaelab train --resume {loop.members[0].run.path}`" if len(loop.members) == 1
           else "the same command")  # fmt: skip
    raise TrainingInterrupted(
        f"interrupted at epoch {p.epoch + 1}, step {p.step}; checkpoint saved, continue with {how}"
    )


def hms(seconds: float) -> str:
    """A duration as 1h02m03s or 2m03s (? when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


FLAT = 1e-6
"""Relative change of the training loss below which an epoch counts as flat."""

SATURATED = 2
"""Flat epochs in a row (the loss the same over SATURATED + 1 epochs) that stop a run."""

SYNC_EVERY = 10
"""Steps between host synchronisations (progress bar, NaN check) within an epoch."""


def epoch_lr(cfg: Config, epoch: int) -> float:
    """lr · lr_decay^(epoch / (epochs − 1)): from lr in the first epoch to lr·lr_decay in
    the last (constant for lr_decay = 1)."""
    t = epoch / max(1, cfg.train.epochs - 1)
    return cfg.train.lr * cfg.train.lr_decay**t


def _default_out(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.name}-{cfg.model.kind}-{stamp}"
