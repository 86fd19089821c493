"""One optimisation step of one model, or of several fused into one vmapped step, in the
run's precision, optionally compiled."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable

import torch

from vaelab.errors import ConfigError
from vaelab.train.fused import Fused

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
