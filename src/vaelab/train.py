"""The training loop: resident-data batches, an optimizer by name, per-example losses
reduced once, checkpoints that resume bit for bit.

Read :func:`train` top to bottom; everything it writes goes through one
:class:`~vaelab.runs.RunFolder`, so only one process writes files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaelab.config import Config
from vaelab.data import Batches, ImageDataset, load_dataset
from vaelab.errors import CheckpointError, VaelabError
from vaelab.evaluate import mean_objective
from vaelab.models import build_model
from vaelab.optim import make_optimizer
from vaelab.runs import RunFolder, decode_bytes, encode_bytes, finite_or_none


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(VaelabError):
    """Ctrl-C during training; a checkpoint was saved."""


@dataclass
class Progress:
    """Where training stands; saved in ``state.json`` (with RNG states) at each checkpoint."""

    epoch: int = 0  # completed epochs
    batch: int = 0  # batches done in the current, unfinished epoch
    step: int = 0  # optimisation steps so far
    train_sum: float = 0.0  # sum of per-example losses in the current epoch
    best: float = math.inf  # best test loss so far
    stale: int = 0  # epochs since the best test loss (early stopping)
    seconds: float = 0.0  # training wall time so far


def load_splits(cfg: Config, cache: str | Path | None = None) -> tuple[ImageDataset, ImageDataset]:
    d = cfg.data
    train = load_dataset(d.name, d.split, cache).limit(d.limit)
    test = load_dataset(d.name, d.test_split, cache).limit(d.test_limit)
    return train, test


def train(
    cfg: Config,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    cache: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    writer: bool = True,
) -> Path:
    """Train the model ``cfg`` describes into run folder ``out`` (or continue ``resume``).

    Returns the run folder. Raises :class:`TrainingDiverged` on a NaN/inf loss (the last
    good checkpoint stays) and :class:`TrainingInterrupted` on Ctrl-C (after saving).
    """
    run = RunFolder(resume or out or _default_out(cfg), writer=writer)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = torch.device(cfg.train.device)

    # ---- data: whole splits resident on the device
    train_set, test_set = load_splits(cfg, cache)
    cfg.model.image_shape = list(train_set.image_shape)
    if cfg.model.conditional or cfg.model.kind == "classifier":
        if train_set.labels is None:
            raise VaelabError(f"{cfg.model.kind} training needs labels; {cfg.data.name} has none")
        cfg.model.classes = list(train_set.classes)
    test_binarize = "none" if cfg.data.binarize == "none" else "static"
    seed = cfg.train.seed
    batches = Batches(train_set, cfg.train.batch_size, True, seed, cfg.data.binarize, device=device)
    # the test split is binarised once with a fixed seed, the same for every run
    test_batches = Batches(test_set, 2048, False, 0, test_binarize, device=device)

    # ---- model and optimizer (seeded), or both restored from the checkpoint
    torch.manual_seed(seed)
    model = build_model(cfg.model, cfg.train.loss).to(device)
    try:
        optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    except ValueError as e:
        raise VaelabError(f"train.optimizer: {e}") from e
    p = Progress()
    if resume:
        p = _restore(run, model, optimizer, batches)
        log(f"resuming {run.path} at epoch {p.epoch}, step {p.step}")
    else:
        if run.file("state.json").exists():
            raise CheckpointError(
                f"{run.path} already holds a run; use --resume {run.path} or another --out"
            )
        run.path.mkdir(parents=True, exist_ok=True)
    run.write_config(cfg)
    n_params = sum(t.numel() for t in model.parameters())
    log(f"training {cfg.model.kind}/{cfg.model.arch} ({n_params:,} parameters) on "
        f"{len(train_set):,} {cfg.data.name} images -> {run.path}")  # fmt: skip

    saved = [p.epoch]  # epoch of the last checkpoint written

    def checkpoint(mid_epoch: bool = False) -> None:
        run.save_checkpoint(model, optimizer, _state(p, batches, mid_epoch))
        saved[0] = p.epoch

    # ---- the loop
    t0 = time.perf_counter() - p.seconds
    try:
        for epoch in range(p.epoch, cfg.train.epochs):
            model.train()
            lr = epoch_lr(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            bar = tqdm(batches.epoch(skip=p.batch), total=len(batches), initial=p.batch,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=not progress,
                       leave=False, unit="batch")  # fmt: skip
            for x, y in bar:
                losses = model.objective(x, y)  # (B,) per-example loss
                loss = losses.mean()  # empirical risk of the batch (Def 1.2.4)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(
                        f"loss is {loss.item()} at epoch {epoch + 1}, step {p.step + 1}; stopped. "
                        f"The last good checkpoint (epoch {saved[0]}) is kept in {run.path}"
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                p.train_sum += float(losses.detach().sum())
                p.batch += 1
                p.step += 1
                if p.batch % 10 == 0:
                    bar.set_postfix(
                        loss=f"{p.train_sum / min(p.batch * batches.batch_size, len(train_set)):.4g}"
                    )
            # ---- end of epoch: test loss, metrics, checkpoint, early stopping
            train_loss = p.train_sum / len(train_set)
            test_loss = mean_objective(model, test_batches, seed=seed)
            p.epoch, p.batch, p.train_sum = epoch + 1, 0, 0.0
            p.seconds = time.perf_counter() - t0
            improved = test_loss < p.best
            p.best, p.stale = (test_loss, 0) if improved else (p.best, p.stale + 1)
            run.append_metrics({"epoch": p.epoch, "step": p.step, "train_loss": train_loss,
                                "test_loss": finite_or_none(test_loss), "seconds": round(p.seconds, 3)})  # fmt: skip
            log(f"epoch {p.epoch:>4}/{cfg.train.epochs}  train {train_loss:.4f}  "
                f"test {test_loss:.4f}  {p.seconds:7.1f}s")  # fmt: skip
            last = p.epoch == cfg.train.epochs
            stop = cfg.train.early_stopping and p.stale >= cfg.train.early_stopping
            if last or stop or p.epoch % max(1, cfg.train.checkpoint_every) == 0:
                checkpoint()
            if stop:
                log(f"early stopping: no better test loss for {p.stale} epochs")
                break
    except KeyboardInterrupt:
        p.seconds = time.perf_counter() - t0
        checkpoint(mid_epoch=True)
        raise TrainingInterrupted(
            f"interrupted at epoch {p.epoch + 1}, step {p.step}; checkpoint saved, continue with "
            f"`vaelab train --resume {run.path}`"
        ) from None
    return run.path


def epoch_lr(cfg: Config, epoch: int) -> float:
    """lr · lr_decay^(epoch / (epochs − 1)): from lr in the first epoch to lr·lr_decay in
    the last (constant for lr_decay = 1)."""
    t = epoch / max(1, cfg.train.epochs - 1)
    return cfg.train.lr * cfg.train.lr_decay**t


def _default_out(cfg: Config) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.name}-{cfg.model.kind}-{stamp}"


def _state(p: Progress, batches: Batches, mid_epoch: bool) -> dict:
    loader = batches.state_dict(mid_epoch=mid_epoch)
    return {
        **{k: finite_or_none(v) if isinstance(v, float) else v for k, v in vars(p).items()},
        "rng": {
            "torch": encode_bytes(torch.get_rng_state()),
            "generator": encode_bytes(loader["generator"]),
            "noise": encode_bytes(loader["noise"].cpu()),
        },
    }


def _restore(run: RunFolder, model, optimizer, batches: Batches) -> Progress:
    state = run.read_state()
    run.load_weights(model, state)
    run.load_optimizer(optimizer, state)
    try:
        rng = state["rng"]
        torch.set_rng_state(decode_bytes(rng["torch"]))
        batches.load_state_dict(
            {"generator": decode_bytes(rng["generator"]), "noise": decode_bytes(rng["noise"])}
        )
        fields = {k: state[k] for k in vars(Progress())}
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({e})") from e
    fields["best"] = math.inf if fields["best"] is None else fields["best"]
    return Progress(**fields)
