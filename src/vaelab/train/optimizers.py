"""Optimizers by name for ``train.optimizer``: vaelab's own (the thesis's, tested equal to
their definitions) first, else any ``torch.optim`` class that a plain training loop can drive.

``adam`` and ``amsgrad`` are the thesis's :class:`~vaelab.thesis.optim.Adam` and
:class:`~vaelab.thesis.optim.AMSGrad` with one change of *how*, not *what*: where torch has a
single-kernel Adam step for the device (``torch._fused_adam_``: CPUs from torch 2.4, CUDA)
and the group's options are ones that kernel computes (constant α, constant β1, no box, ε > 0),
the step runs as that one kernel instead of a dozen ``_foreach`` passes over the parameters.
The update is the same formula (tests compare both paths to 1e-6); the state (``exp_avg``,
``exp_avg_sq``, ``max_exp_avg_sq``, the group's step t) is the same, so checkpoints resume on
either path. On a 2-core AMD EPYC the kernel takes the Adam step of the pytorch/examples VAE
from about 2 ms to 0.1-0.2 ms (benchmarks/RESULTS.md): the ``_foreach_sqrt`` of the reference
path is slow on the tiny second moments of rarely lit pixels' weights.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

from vaelab.thesis.optim import GD, SGD, Adam, AMSGrad, ParamsT

# --- the single-kernel moment step ----------------------------------------------------------

_KERNEL: dict[tuple[str, torch.dtype], bool] = {}
"""(device type, dtype) -> whether ``torch._fused_adam_`` runs there (probed once)."""


def kernel_available(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether torch's fused Adam kernel runs for tensors of ``dtype`` on ``device``: tried
    once on a one-element tensor (torch < 2.4 has none on the CPU)."""
    key = (device.type, dtype)
    if key not in _KERNEL:
        p, g, m, v = (torch.zeros(1, device=device, dtype=dtype) for _ in range(4))
        step = torch.ones((), device=device, dtype=torch.float32)
        try:
            torch._fused_adam_([p], [g], [m], [v], [], [step], lr=0.0, beta1=0.9, beta2=0.999,
                               weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False)  # fmt: skip
            _KERNEL[key] = True
        except (AttributeError, NotImplementedError, RuntimeError):
            _KERNEL[key] = False
    return _KERNEL[key]


def _kernel_fits(group: dict[str, Any], params: list[torch.Tensor]) -> bool:
    """Whether the fused kernel computes this group's step: the options it has, and all
    parameters and gradients dense, of one dtype on one device."""
    if group["lr_schedule"] != "constant" or group["beta1_decay"] != 1.0:
        return False
    if group["bounds"] is not None or not group["eps"] > 0:
        return False
    first = params[0]
    same = all(p.dtype == first.dtype and p.device == first.device and p.grad.dtype == p.dtype
               and p.grad.layout == torch.strided for p in params)  # fmt: skip
    return same and kernel_available(first.device, first.dtype)


class _KernelStep:
    """Mixin: the group's moment step as ``torch._fused_adam_`` where it fits, else the
    thesis's ``_foreach`` step. The choice is the group's ``kernel`` entry, so it travels
    with the optimizer's state: a checkpoint written before the kernel existed has none and
    resumes on the reference path, bit for bit. ``kernel=False`` keeps the reference path."""

    def __init__(self, *args: Any, kernel: bool = True, **kwargs: Any) -> None:
        self._kernel = bool(kernel)  # before super().__init__, which adds the groups
        super().__init__(*args, **kwargs)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        param_group.setdefault("kernel", self._kernel)
        super().add_param_group(param_group)

    def _group_step(self, group, params, grads, states) -> None:
        if not (group.get("kernel", False) and _kernel_fits(group, params)):
            return super()._group_step(group, params, grads, states)
        beta1, beta2 = group["betas"]
        # t = ∞ makes both bias corrections 1 - β^t exactly 1: the uncorrected form
        t = float(group["step"]) if group["bias_correction"] else float("inf")
        steps = [torch.full((), t, device=params[0].device)] * len(params)
        maxes = states[2] if self._amsgrad else []
        torch._fused_adam_(params, grads, states[0], states[1], maxes, steps, lr=group["lr"],
                           beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                           amsgrad=self._amsgrad, maximize=False)  # fmt: skip


class KernelAdam(_KernelStep, Adam):
    """:class:`~vaelab.thesis.optim.Adam`, its step one fused kernel where torch has one."""


class KernelAMSGrad(_KernelStep, AMSGrad):
    """:class:`~vaelab.thesis.optim.AMSGrad`, its step one fused kernel where torch has one."""


# --- registry -------------------------------------------------------------------------------

OPTIMIZERS: dict[str, type[Optimizer]] = {
    "gd": GD,
    "sgd": SGD,
    "adam": KernelAdam,
    "amsgrad": KernelAMSGrad,
}
"""vaelab's optimizers by name (Theorem 1.2.5, Theorem 1.2.8, Algorithms 1 and 3); the moment
methods on torch's fused kernel where it fits (``kernel=False``: the reference path)."""


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
