"""One optimisation step of one model, or of several fused into one vmapped step, in the
run's precision, optionally compiled."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch
from torch.nn.parallel import DistributedDataParallel

from vaelab.errors import ConfigError
from vaelab.train.distributed import SINGLE, Dist
from vaelab.train.fused import Fused, ObjectiveModule

AUTOCAST: dict[str, torch.dtype] = {"bf16": torch.bfloat16}
"""train.precision -> the dtype autocast gives matmuls and convolutions (fp32: no autocast)."""


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
    dist: Dist = SINGLE,
    global_len: Callable[[], int] | None = None,
) -> Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]:
    """``step(x, y)``: one optimisation step of every model on batch x (fused when there
    are several); returns the per-example losses (M, B), still on the device — reading
    them would wait for the step. On several processes (``dist``) x is this rank's share
    of a global batch of ``global_len()`` examples, and the model runs under
    DistributedDataParallel."""
    mixed = autocast(next(models[0].parameters()).device, precision)
    if dist.on:
        return _ddp_step(models, optimizers, compile, log, mixed, dist, global_len)
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


def _ddp_step(models, optimizers, compile, log, mixed, dist: Dist, global_len):
    """One model under DistributedDataParallel: each rank back-propagates its share of the
    global batch's loss sum, scaled by world size / global batch, so that DDP's average of
    the ranks' gradients is the gradient of the global batch's mean loss."""
    if len(models) > 1:
        raise ConfigError("fused runs cannot train on several processes: train them one by one")
    (model,), (optimizer,) = models, optimizers
    device = next(model.parameters()).device
    net = DistributedDataParallel(
        ObjectiveModule(model), device_ids=[device.index] if device.type == "cuda" else None
    )
    objective = compiled(net, compile, log)

    def step(x, y):
        with mixed:
            losses = objective(x, y)  # (b,) this rank's per-example losses
        loss = losses.sum() * (dist.world_size / global_len())  # DDP averages over ranks
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return losses.unsqueeze(0)  # (1, b)

    return step
