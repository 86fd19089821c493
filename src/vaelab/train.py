"""The training loop: resident-data batches, an optimizer by name, per-example losses
reduced once, checkpoints that resume bit for bit.

Read :func:`train` top to bottom; everything it writes goes through one
:class:`~vaelab.runs.RunFolder`, so only one process writes files.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaelab.config import Config
from vaelab.data import Batches, ImageDataset, derive_seed, heldout_batches, load_split
from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.evaluate import mean_objective
from vaelab.models import build_model
from vaelab.optim import make_optimizer
from vaelab.runs import RunFolder, decode_bytes, encode_bytes, finite_or_none, resolve_device


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite."""


class TrainingInterrupted(VaelabError):
    """Ctrl-C (or SIGTERM) during training; a checkpoint was saved."""


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
    """The (limited) training and test splits of ``cfg.data``; both must hold images of one
    shape, and of ``cfg.model.image_shape`` when that is filled in (a resumed run)."""
    d = cfg.data
    train = load_split(d.name, d.split, cache, d.limit, cfg.model.image_shape)
    test = load_split(d.name, d.test_split, cache, d.test_limit, train.image_shape)
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
    top = int(test_set.labels.max()) if len(test_set.labels) else -1
    if top >= len(classes):
        raise DataError(
            f"split {cfg.data.test_split!r} of {cfg.data.name} has label {top}, but the "
            f"training split {cfg.data.split!r} has {len(classes)} classes"
        )
    return classes


def setup(
    cfg: Config, cache: str | Path | None = None
) -> tuple[torch.nn.Module, torch.optim.Optimizer, Batches, ImageDataset, ImageDataset]:
    """What training starts from: (model, optimizer, training batches, training split, test
    split), on ``cfg.train.device``. Fills in ``cfg.model.image_shape`` (and ``classes``)
    from the data; the model is initialised from ``cfg.train.seed``."""
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_set, test_set = load_splits(cfg, cache)
    cfg.model.image_shape = list(train_set.image_shape)
    if cfg.model.conditional or cfg.model.kind == "classifier":
        cfg.model.classes = _classes(cfg, train_set, test_set)
    seed = cfg.train.seed
    batches = Batches(train_set, cfg.train.batch_size, True, seed, cfg.data.binarize, device=device)
    torch.manual_seed(derive_seed(seed, "torch"))  # initialisation, then the model's sampling
    model = build_model(cfg.model, cfg.train.loss).to(device)
    try:
        optimizer = make_optimizer(cfg.train.optimizer, model.parameters(), lr=cfg.train.lr)
    except ValueError as e:
        raise ConfigError(f"train.optimizer: {e}") from e
    return model, optimizer, batches, train_set, test_set


def compiled(fn: Callable, enabled: bool, log: Callable[[str], None]) -> Callable:
    """``fn`` under torch.compile when ``enabled``; if compiling or the first compiled call
    fails (no compiler, unsupported platform), warn once and run ``fn`` eagerly."""
    if not enabled:
        return fn
    current = {"fn": torch.compile(fn)}

    def call(*args):
        try:
            return current["fn"](*args)
        except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
            if current["fn"] is fn:
                raise
            log(f"warning: torch.compile failed ({type(e).__name__}); continuing without it")
            current["fn"] = fn
            return fn(*args)

    return call


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[Callable[[], bool]]:
    """Within the block SIGINT (Ctrl-C) and SIGTERM only set a flag, which the yielded
    function reads, so training can stop at a batch boundary; a second signal raises
    KeyboardInterrupt at once. Outside the main thread nothing changes."""
    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum: int, frame: object) -> None:
        if caught:
            raise KeyboardInterrupt
        caught.append(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield lambda: bool(caught)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, signal.SIG_DFL if old is None else old)


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
    good checkpoint stays) and :class:`TrainingInterrupted` on Ctrl-C or SIGTERM (after
    saving at the next batch boundary; a second Ctrl-C stops at once, without saving).
    """
    run = RunFolder(resume or out or _default_out(cfg), writer=writer)
    if not resume and run.file("state.json").exists():
        raise CheckpointError(
            f"{run.path} already holds a run; use --resume {run.path} or another --out"
        )

    # ---- data resident on the device, the seeded model and optimizer
    model, optimizer, batches, train_set, test_set = setup(cfg, cache)
    seed = cfg.train.seed
    # the test split is binarised once with a fixed seed, the same for every run
    test_batches = heldout_batches(test_set, cfg.data.binarize, 2048, batches.device)

    # ---- a new run folder, or the state of the checkpoint to continue
    p = Progress()
    if resume:
        p = _restore(run, model, optimizer, batches, log)
        run.reset_metrics(upto_epoch=p.epoch)
        log(f"resuming {run.path} at epoch {p.epoch}, step {p.step}")
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        run.reset_metrics()
    run.write_config(cfg)
    n_params = sum(t.numel() for t in model.parameters())
    log(f"training {cfg.model.kind}/{cfg.model.arch} ({n_params:,} parameters) on "
        f"{len(train_set):,} {cfg.data.name} images -> {run.path}")  # fmt: skip

    objective = compiled(model.objective, cfg.train.compile, log)
    saved = p.epoch if resume else None  # completed epochs of the last checkpoint written
    t0 = time.perf_counter() - p.seconds

    def checkpoint(mid_epoch: bool = False) -> None:
        nonlocal saved
        run.save_checkpoint(model, optimizer, _state(p, batches, mid_epoch))
        saved = p.epoch

    def diverged(what: str) -> TrainingDiverged:
        kept = (
            "no checkpoint was written yet"
            if saved is None
            else f"the last good checkpoint (epoch {saved}) is kept in {run.path}"
        )
        return TrainingDiverged(f"{what}; stopped. {kept}")

    def halt_if(requested: bool) -> None:
        """On Ctrl-C or SIGTERM: checkpoint where training stands, then stop."""
        if requested:
            p.seconds = time.perf_counter() - t0
            checkpoint(mid_epoch=p.batch > 0)
            raise TrainingInterrupted(
                f"interrupted at epoch {p.epoch + 1}, step {p.step}; checkpoint saved, continue "
                f"with `vaelab train --resume {run.path}`"
            )

    # ---- the loop
    with deferred_interrupts() as interrupted:
        for epoch in range(p.epoch, cfg.train.epochs):
            model.train()
            lr = epoch_lr(cfg, epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            bar = tqdm(batches.epoch(skip=p.batch), total=len(batches), initial=p.batch,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=None if progress else True,
                       leave=False, unit="batch")  # fmt: skip
            for x, y in bar:
                losses = objective(x, y)  # (B,) per-example loss
                loss = losses.mean()  # empirical risk of the batch (Def 1.2.4)
                if not torch.isfinite(loss):
                    raise diverged(f"loss is {loss.item()} at epoch {epoch + 1}, step {p.step + 1}")
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
                halt_if(interrupted())
            # ---- end of epoch: test loss, metrics, checkpoint, early stopping
            train_loss = p.train_sum / len(train_set)
            test_loss = mean_objective(model, test_batches, seed=seed)
            if not math.isfinite(test_loss):
                raise diverged(f"test loss is {test_loss} after epoch {epoch + 1}")
            p.epoch, p.batch, p.train_sum = epoch + 1, 0, 0.0
            p.seconds = time.perf_counter() - t0
            improved = test_loss < p.best
            p.best, p.stale = (test_loss, 0) if improved else (p.best, p.stale + 1)
            run.append_metrics({"epoch": p.epoch, "step": p.step, "train_loss": train_loss,
                                "test_loss": test_loss, "seconds": round(p.seconds, 3)})  # fmt: skip
            log(f"epoch {p.epoch:>4}/{cfg.train.epochs}  train {train_loss:.4f}  "
                f"test {test_loss:.4f}  {p.seconds:7.1f}s")  # fmt: skip
            last = p.epoch == cfg.train.epochs
            stop = cfg.train.early_stopping and p.stale >= cfg.train.early_stopping
            if last or stop or p.epoch % cfg.train.checkpoint_every == 0:
                checkpoint()
            if stop:
                log(f"early stopping: no better test loss for {p.stale} epochs")
                break
            halt_if(interrupted())
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
    """Progress and every RNG state a resumed run needs to draw the same numbers."""
    loader = batches.state_dict(mid_epoch=mid_epoch)
    device = batches.device
    rng = {
        "device": device.type,
        "torch": encode_bytes(torch.get_rng_state()),
        "generator": encode_bytes(loader["generator"]),
        "noise": encode_bytes(loader["noise"].cpu()),
    }
    if device.type == "cuda":
        rng["cuda"] = encode_bytes(torch.cuda.get_rng_state(device))
    return {
        **{k: finite_or_none(v) if isinstance(v, float) else v for k, v in vars(p).items()},
        "rng": rng,
    }


def _restore(
    run: RunFolder, model, optimizer, batches: Batches, log: Callable[[str], None]
) -> Progress:
    """Load a checkpoint's weights, optimizer, RNG states and progress."""
    state = run.read_state()
    run.load_weights(model, state)
    run.load_optimizer(optimizer, state)
    device = batches.device
    try:
        rng = state["rng"]
        torch.set_rng_state(decode_bytes(rng["torch"]))
        loader = {"generator": decode_bytes(rng["generator"]), "noise": batches.noise.get_state()}
        if rng.get("device", "cpu") == device.type:
            loader["noise"] = decode_bytes(rng["noise"])
            if "cuda" in rng:
                torch.cuda.set_rng_state(decode_bytes(rng["cuda"]), device)
        else:
            log(f"note: the checkpoint ran on {rng.get('device', 'cpu')}, this run on "
                f"{device.type}; random draws on the device will differ from an unbroken run")  # fmt: skip
        batches.load_state_dict(loader)
        fields = {k: state[k] for k in vars(Progress())}
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({e})") from e
    fields["best"] = math.inf if fields["best"] is None else fields["best"]
    return Progress(**fields)
