"""Optimizers by name for ``train.optimizer``: vaelab's own (the thesis's, tested equal to
their definitions) first, else any ``torch.optim`` class that a plain training loop can drive."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from vaelab.thesis.optim import GD, SGD, Adam, AMSGrad, ParamsT

# --- registry -------------------------------------------------------------------------------

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "gd": GD,
    "sgd": SGD,
    "adam": Adam,
    "amsgrad": AMSGrad,
}
"""vaelab's optimizers by name (Theorem 1.2.5, Theorem 1.2.8, Algorithms 1 and 3)."""


UNSUITED = {"lbfgs": "needs a closure that re-evaluates the loss",
            "sparseadam": "takes sparse gradients only"}  # fmt: skip
"""torch.optim classes a plain ``loss.backward(); step()`` loop cannot drive, and why."""


def _torch_optimizers() -> dict[str, type[Optimizer]]:
    found = {}
    for name in dir(torch.optim):
        obj = getattr(torch.optim, name)
        if isinstance(obj, type) and issubclass(obj, Optimizer) and obj is not Optimizer:
            found[name.lower()] = obj
    return {k: v for k, v in found.items() if k not in UNSUITED}


def make_optimizer(name: str, params: ParamsT, lr: float, **kwargs: Any) -> Optimizer:
    """Build the optimizer called ``name`` (§1.2): one of :data:`OPTIMIZERS` first, else a
    ``torch.optim`` class by name (``"AdamW"``, ``"torch.AdamW"``, ``"torch.optim.Adam"``;
    case-insensitive). A ``torch.`` prefix always means torch's class.
    """
    if not isinstance(name, str):
        raise ValueError(f"optimizer name must be a string, got {name!r}")
    key = name.strip().lower()
    cls: type[Optimizer] | None = None
    if key.startswith("torch."):
        key = key.removeprefix("torch.").removeprefix("optim.")
    else:
        cls = OPTIMIZERS.get(key)
    torch_classes = _torch_optimizers()
    cls = cls or torch_classes.get(key)
    if cls is None and key in UNSUITED:
        raise ValueError(
            f"optimizer {name!r} {UNSUITED[key]}: vaelab's training loop cannot use it"
        )
    if cls is None:
        known = [*OPTIMIZERS, *(f"torch.{c.__name__}" for c in torch_classes.values())]
        raise ValueError(f"unknown optimizer {name!r}; known: {', '.join(known)}")
    try:
        return cls(params, lr=lr, **kwargs)
    except TypeError as err:
        raise ValueError(f"bad options for optimizer {name!r}: {err}") from None
