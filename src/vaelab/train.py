"""The training loop: resident-data batches, an optimizer by name, per-example losses
reduced once, checkpoints that resume bit for bit.

Read :func:`train_runs` (the loop behind :func:`train`) top to bottom; everything it writes goes through one
:class:`~vaelab.runs.RunFolder`, so only one process writes files.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vaelab.build import build_model
from vaelab.config import AUTOCAST, Config
from vaelab.data import (
    Batches,
    ImageDataset,
    derive_seed,
    heldout_batches,
    load_split,
    split_rows,
)
from vaelab.errors import CheckpointError, ConfigError, DataError, VaelabError
from vaelab.evaluate import mean_objective
from vaelab.fused import Fused
from vaelab.optim import make_optimizer
from vaelab.runs import RunFolder, decode_bytes, encode_bytes, finite_or_none, resolve_device


class TrainingDiverged(VaelabError):
    """The loss became NaN or infinite; ``run`` is the run folder it happened in."""

    def __init__(self, message: str, run: Path | None = None):
        super().__init__(message)
        self.run = run


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
    stopped: bool = False  # early stopping ended the run
    seconds: float = 0.0  # training wall time so far


def load_splits(cfg: Config, cache: str | Path | None = None) -> tuple[ImageDataset, ImageDataset]:
    """The (limited) training and test splits of ``cfg.data``; both must hold images of one
    shape, and of ``cfg.model.image_shape`` when that is filled in (a resumed run)."""
    d = cfg.data
    train = load_split(d.name, d.split, cache, d.limit, cfg.model.image_shape)
    test = load_split(d.name, d.test_split, cache, d.test_limit, train.image_shape)
    # held out means other rows, not only another split name (MNIST's valid is in its train)
    (a, a0, _), (b, b0, _) = (split_rows(d.name, s, cache) for s in (d.split, d.test_split))
    a1, b1 = a0 + len(train), b0 + len(test)  # a limit takes a split's first rows
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
    cfg: Config, cache: str | Path | None = None, also: Sequence[Config] = ()
) -> tuple[Batches, ImageDataset, ImageDataset]:
    """The training batches (on ``cfg.train.device``, seeded by ``cfg.train.seed``), the
    training split and the test split. Fills in ``cfg.model.image_shape`` (and ``classes``)
    from the data, and the same into the configs ``also`` (models trained on this data)."""
    device = resolve_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    train_set, test_set = load_splits(cfg, cache)
    cfg.model.image_shape = list(train_set.image_shape)
    if cfg.model.conditional or cfg.model.kind == "classifier":
        cfg.model.classes = _classes(cfg, train_set, test_set)
    for other in also:
        other.model.image_shape, other.model.classes = cfg.model.image_shape, cfg.model.classes
    batches = Batches(train_set, cfg.train.batch_size, True, cfg.train.seed, cfg.data.binarize,
                      device=device)  # fmt: skip
    return batches, train_set, test_set


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
    path = Path(resume or out or _default_out(cfg))
    if resume is not None and RunFolder(path).file("state.json").exists():
        state = read_progress(RunFolder(path))
        if cfg.train.epochs < state["epoch"]:
            raise ConfigError(f"train.epochs = {cfg.train.epochs} is below the {state['epoch']} "
                              f"epochs {path} has done")  # fmt: skip
        if finished(cfg, state):
            early = state["epoch"] < cfg.train.epochs  # so it stopped early
            how, key = ("stopped early", "early_stopping") if early else ("trained", "epochs")
            log(f"{path}: already {how} ({state['epoch']}/{cfg.train.epochs} epochs); nothing to "
                f"do (--set train.{key}=… goes on)")  # fmt: skip
            return path
    return train_runs([cfg], [path], resume is not None, cache, progress, log, writer)[0]


def stretched_schedule(old: Config, new: Config) -> str | None:
    """A warning when a run continues with other epochs under a decaying learning rate."""
    if new.train.epochs == old.train.epochs or old.train.lr_decay == 1:
        return None
    return (f"warning: train.epochs {old.train.epochs} -> {new.train.epochs} with "
            f"train.lr_decay = {old.train.lr_decay} stretches the learning-rate schedule over "
            "the new length")  # fmt: skip


def read_progress(run: RunFolder) -> dict:
    """``state.json`` of ``run``, whose progress counts (read before the checkpoint is
    restored) must be integers: a missing one is a CheckpointError, not a KeyError."""
    state = run.read_state()
    if bad := [k for k in ("epoch", "batch", "stale") if not isinstance(state.get(k), int)]:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({', '.join(bad)})")
    return state


def finished(cfg: Config, state: dict) -> bool:
    """Whether a run with ``state`` has ended: all epochs done, or stopped early (and the
    patience in ``cfg`` would stop it too). A state written before ``stopped`` existed
    was tested at every epoch, where a stale count past the patience means it stopped."""
    patience = cfg.train.early_stopping
    stopped = patience and state["stale"] >= patience and state.get("stopped", True)
    return state["epoch"] >= cfg.train.epochs or bool(stopped)


def train_runs(
    cfgs: list[Config],
    outs: list[Path],
    resume: bool,
    cache: str | Path | None,
    progress: bool,
    log: Callable[[str], None],
    writer: bool,
) -> list[Path]:
    """:func:`train` for one config, :func:`~vaelab.groups.train_many` for several (fused).
    Each folder is held (:meth:`~vaelab.runs.RunFolder.held`) before its state is read, so
    a second process on it is refused before it reads or writes anything."""
    runs = [RunFolder(o, writer=writer) for o in outs]
    if len({r.path.resolve() for r in runs}) < len(runs):
        raise ConfigError(f"runs trained together need a folder each, got {[str(o) for o in outs]}")
    with contextlib.ExitStack() as held:
        for run in runs:
            held.enter_context(run.held())
        return _train_held(cfgs, runs, resume, cache, progress, log)


def _train_held(
    cfgs: list[Config],
    runs: list[RunFolder],
    resume: bool,
    cache: str | Path | None,
    progress: bool,
    log: Callable[[str], None],
) -> list[Path]:
    """The body of :func:`train_runs`, with the folders held."""
    for run in runs:
        if not resume and run.file("state.json").exists():
            raise CheckpointError(
                f"{run.path} already holds a run; continue it with `vaelab train --resume {run.path}`, or choose another --out"
            )

    # ---- data resident on the device (shared), the seeded models and optimizers
    cfg = cfgs[0]  # what all members share: data, model, batches, epochs
    batches, train_set, test_set = setup_data(cfg, cache, also=cfgs[1:])
    members = [Member(c, run, *setup_model(c, batches.device), Progress()) for c, run in zip(cfgs, runs, strict=True)]  # fmt: skip
    seed = cfg.train.seed
    # the test split is binarised once with a fixed seed, the same for every run
    test_batches = heldout_batches(test_set, cfg.data.binarize, 2048, batches.device)

    # ---- new run folders, or the state of the checkpoints to continue
    if resume:
        for m in members:
            m.p = _restore(m.run, m.model, m.optimizer, batches, log)
            m.saved = m.p.epoch
    step = step_function([m.model for m in members], [m.optimizer for m in members],
                         cfg.train.compile, log, cfg.train.precision)  # fmt: skip
    p = members[0].p  # epoch, batch and step are the same for all members
    if any((m.p.epoch, m.p.batch) != (p.epoch, p.batch) for m in members):
        raise CheckpointError("runs trained together must stand at the same epoch and batch")
    t0 = time.perf_counter() - p.seconds
    # where this call began (in epochs, a resumed part-epoch counted in part), for the eta
    start = (p.epoch + p.batch / len(batches), p.seconds)
    wide = torch.float32 if batches.device.type == "mps" else torch.float64  # mps: no float64
    sums = torch.zeros(len(members), dtype=wide, device=batches.device)  # (M,)
    synced = [p.step]  # the step of the last sync

    def sync() -> None:
        """Copy the device-side loss sums into the members' progress: the one host sync,
        every ``SYNC_EVERY`` steps and at checkpoints."""
        for m, total in zip(members, sums.tolist(), strict=True):
            m.p.train_sum = total
            if not math.isfinite(total):
                raise diverged(f"loss is {total} at epoch {p.epoch + 1} (within steps "
                               f"{synced[0] + 1}-{p.step})", m)  # fmt: skip
        synced[0] = p.step

    def checkpoint(m: Member, mid_epoch: bool = False) -> None:
        m.run.save_checkpoint(m.model, m.optimizer, _state(m.p, batches, mid_epoch))
        m.saved = m.p.epoch

    def diverged(what: str, m: Member) -> TrainingDiverged:
        kept = (
            "no checkpoint was written yet"
            if m.saved is None
            else f"the last good checkpoint (epoch {m.saved}) is kept in {m.run.path}"
        )
        where = f"{m.run.path}: " if len(members) > 1 else ""
        return TrainingDiverged(f"{where}{what}; stopped. {kept}", m.run.path)

    def halt_if(requested: bool) -> None:
        """On Ctrl-C or SIGTERM: checkpoint where training stands, then stop."""
        if requested:
            sync()  # never checkpoints a diverged model
            for m in members:
                m.p.seconds = time.perf_counter() - t0
                checkpoint(m, mid_epoch=p.batch > 0)
            if p.epoch == cfg.train.epochs:  # the signal came as the last epoch ended
                raise TrainingInterrupted(f"interrupted as training ended (epoch {p.epoch} of "
                                          f"{p.epoch}); checkpoint saved, the run is finished")  # fmt: skip
            how = (f"`vaelab train --resume {runs[0].path}`" if len(runs) == 1
                   else "the same command")  # fmt: skip
            raise TrainingInterrupted(
                f"interrupted at epoch {p.epoch + 1}, step {p.step}; checkpoint saved, continue "
                f"with {how}"
            )

    def advance() -> None:
        for m in members:
            m.p.batch += 1
            m.p.step += 1

    # ---- the loop
    with deferred_interrupts() as interrupted:
        for m in members:  # only now write anything
            if resume:
                m.run.reset_metrics(upto_epoch=m.p.epoch)
                log(f"resuming {m.run.path} at epoch {m.p.epoch}, step {m.p.step}")
            else:
                m.run.path.mkdir(parents=True, exist_ok=True)
                m.run.reset_metrics()
            m.run.write_config(m.cfg)
        n_params = sum(t.numel() for t in members[0].model.parameters())
        log(f"training {cfg.model.kind}/{cfg.model.arch} ({n_params:,} parameters"
            f"{f', {len(members)} models fused' if len(members) > 1 else ''}) on "
            f"{len(train_set):,} {cfg.data.name} images -> {', '.join(str(r.path) for r in runs)}")  # fmt: skip
        for epoch in range(p.epoch, cfg.train.epochs):
            for m in members:
                m.model.train()
                for group in m.optimizer.param_groups:
                    group["lr"] = epoch_lr(m.cfg, epoch)
            sums.copy_(torch.tensor([m.p.train_sum for m in members], dtype=wide))
            bar = tqdm(batches.epoch(skip=p.batch), total=len(batches), initial=p.batch,
                       desc=f"epoch {epoch + 1}/{cfg.train.epochs}", disable=None if progress else True,
                       leave=False, unit="batch")  # fmt: skip
            for x, y in bar:
                losses = step(x, y)  # (M, B) per-example losses, parameters updated
                sums += losses.detach().sum(dim=1, dtype=wide)  # (M, B) -> (M,)
                advance()
                if p.batch % SYNC_EVERY == 0:
                    sync()
                    seen = min(p.batch * batches.batch_size, len(train_set))
                    bar.set_postfix(loss="/".join(f"{m.p.train_sum / seen:.4g}" for m in members))
                if p.batch < len(batches):  # after the last batch: stop once the epoch is done
                    halt_if(interrupted())
            sync()
            # ---- end of epoch: test loss, metrics, checkpoint, early stopping
            tested = (epoch + 1) % cfg.train.test_every == 0 or epoch + 1 == cfg.train.epochs
            test_losses = [mean_objective(m.model, test_batches, seed=seed) if tested else None
                           for m in members]  # fmt: skip
            for m, test_loss in zip(members, test_losses, strict=True):  # before any writes
                if test_loss is not None and not math.isfinite(test_loss):
                    raise diverged(f"test loss is {test_loss} after epoch {epoch + 1}", m)
            stop = False
            for m, test_loss in zip(members, test_losses, strict=True):
                q = m.p
                train_loss = q.train_sum / len(train_set)
                q.epoch, q.batch, q.train_sum = epoch + 1, 0, 0.0
                q.seconds = time.perf_counter() - t0
                # stale: epochs since the best test loss so far
                improved = test_loss is not None and test_loss < q.best
                q.best, q.stale = (test_loss, 0) if improved else (q.best, q.stale + 1)
                # models: how many trained in this step (> 1: fused; then seconds are shared)
                m.run.append_metrics({"epoch": q.epoch, "step": q.step, "train_loss": train_loss,
                                      "test_loss": test_loss, "seconds": round(q.seconds, 3),
                                      "models": len(members)})  # fmt: skip
                name = f"{m.run.path.name}: " if len(members) > 1 else ""
                shown = "   -   " if test_loss is None else f"{test_loss:.4f}"
                left = cfg.train.epochs - q.epoch
                done = q.epoch - start[0]  # epochs in this call; 0 when resumed at an epoch's end
                pace = (q.seconds - start[1]) / done if done > 0 else math.nan  # s/epoch
                eta = f"  eta {hms(pace * left)}" if left else ""
                log(f"{name}epoch {q.epoch:>4}/{cfg.train.epochs}  train {train_loss:.4f}  "
                    f"test {shown}  {q.seconds:7.1f}s{eta}")  # fmt: skip
                patience = cfg.train.early_stopping
                stop = q.stopped = bool(tested and patience and q.stale >= patience)
                if q.epoch == cfg.train.epochs or stop or q.epoch % cfg.train.checkpoint_every == 0:
                    checkpoint(m)
            if stop:  # only ever one member: fused runs do not stop early
                log(f"early stopping: no better test loss for {p.stale} epochs")
                break
            halt_if(interrupted())
    return [r.path for r in runs]


def hms(seconds: float) -> str:
    """A duration as 1h02m03s or 2m03s (? when unknown)."""
    if not math.isfinite(seconds):
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


SYNC_EVERY = 10
"""Steps between host synchronisations (progress bar, NaN check) within an epoch."""


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """A reusable context for the forward pass in ``precision``: torch.autocast to bfloat16
    for "bf16" (weights, gradients, optimizer state and the losses stay fp32), nothing for
    "fp32". A device that cannot autocast to that dtype is a ConfigError, here and not at
    the first step."""
    if precision not in AUTOCAST:
        return contextlib.nullcontext()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            ctx = torch.autocast(device.type, dtype=AUTOCAST[precision])
        except RuntimeError as e:
            raise ConfigError(f"train.precision = {precision!r} on {device}: {e}") from e
    if not getattr(ctx, "_enabled", True):  # autocast turned itself off, with a warning
        why = "; ".join(str(w.message) for w in caught) or "autocast is disabled there"
        raise ConfigError(f"train.precision = {precision!r} is not available on {device}: {why}")
    return ctx


def step_function(
    models: list[torch.nn.Module],
    optimizers: list[torch.optim.Optimizer],
    compile: bool = False,
    log: Callable[[str], None] = print,
    precision: str = "fp32",
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``step(x, y)``: one optimisation step of every model on batch x (fused when there
    are several); returns the per-example losses (M, B), still on the device — reading
    them would wait for the step."""
    mixed = autocast(next(models[0].parameters()).device, precision)
    if len(models) == 1:
        objective = compiled(models[0].objective, compile, log)
        (optimizer,) = optimizers

        def step(x, y):
            with mixed:
                losses = objective(x, y)  # (B,) per-example loss
            loss = losses.mean()  # empirical risk of the batch (Def 1.2.4)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return losses.unsqueeze(0)  # (1, B)

        return step

    fused = Fused(models)
    objective = compiled(fused.objective, compile, log)

    def fused_step(x, y):
        with mixed:
            losses = objective(x, y)  # (M, B): every model's per-example loss
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        fused.backward(losses)  # each model's mean loss -> its own .grad
        for opt in optimizers:
            opt.step()
        return losses

    return fused_step


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
        fields = {k: state[k] for k in vars(Progress()) if k != "stopped"}
        fields["stopped"] = bool(state.get("stopped", False))  # absent in older checkpoints
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{run.file('state.json')} is incomplete ({e})") from e
    fields["best"] = math.inf if fields["best"] is None else fields["best"]
    return Progress(**fields)
