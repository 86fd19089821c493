"""The generic adaptive method of §1.2 (Algorithm 2): any recursive first and second
moment, with SGD's and Adam's as instances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from vaelab.thesis.optim import (
    LR_SCHEDULES,
    MomentFn,
    ParamsT,
    _check_adaptive_group,
    _closure_loss,
    _descend,
    _gather,
    _project,
    _real,
)

# --- the generic adaptive method ------------------------------------------------------------


def sgd_moments() -> tuple[MomentFn, MomentFn]:
    """(φ, ψ) with m_t = g_t and V_t = 1: Algorithm 2 becomes SGD (Example 1.2.15 (1)).

    Exactly SGD with ``eps=0``; with ε > 0 every step is divided by 1 + ε.
    """

    def phi(m: list[Tensor], g: list[Tensor], t: int) -> list[Tensor]:
        torch._foreach_copy_(m, g)  # m_t = g_t (copied, so the state never aliases .grad)
        return m

    def psi(v: list[Tensor], g: list[Tensor], t: int) -> list[Tensor]:
        # V_t = 1, set at every step: a parameter's state starts (at 0) at its first gradient,
        # which for some parameters comes after the group's step 1
        torch._foreach_mul_(v, 0.0)
        torch._foreach_add_(v, 1.0)
        return v

    return phi, psi


def adam_moments(
    beta1: float = 0.9, beta2: float = 0.999, beta1_decay: float = 1.0
) -> tuple[MomentFn, MomentFn]:
    """(φ, ψ) of Adam without bias correction (Example 1.2.15 (2)), recursively:

    m_t = β1t m_{t−1} + (1 − β1t) g_t = (1 − β1) Σ_i β1^{t−i} g_i for constant β1, and
    v_t = β2 v_{t−1} + (1 − β2) g_t² = (1 − β2) Σ_i β2^{t−i} g_i². β1t = β1·λ^(t−1).
    """
    for name, b in (("beta1", beta1), ("beta2", beta2)):
        if not _real(b) or not 0.0 <= b < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {b!r}")
    if not _real(beta1_decay) or not 0.0 < beta1_decay <= 1.0:
        raise ValueError(f"beta1_decay must be in (0, 1], got {beta1_decay!r}")

    def phi(m: list[Tensor], g: list[Tensor], t: int) -> list[Tensor]:
        torch._foreach_lerp_(m, g, 1 - beta1 * beta1_decay ** (t - 1))
        return m

    def psi(v: list[Tensor], g: list[Tensor], t: int) -> list[Tensor]:
        torch._foreach_mul_(v, beta2)
        torch._foreach_addcmul_(v, g, g, 1 - beta2)
        return v

    return phi, psi


class GenericAdaptive(Optimizer):
    """The generic adaptive method (Algorithm 2) with user-supplied moment functions.

    Algorithm 2 writes m_t = φ_t(g_1, …, g_t) and V_t = ψ_t(g_1, …, g_t); every practical
    choice is a recursion, so here φ and ψ are recursive updates on the optimizer state::

        phi(m_prev, grads, t) -> m_t        psi(v_prev, grads, t) -> v_t

    Each argument is a list with one tensor per parameter of the group (those with a
    gradient), so the functions can use ``torch._foreach_*`` ops; t = 1, 2, … and the state
    starts at zeros. They may update ``m_prev`` / ``v_prev`` in place and return them, or
    return new tensors, which become the state. V_t = diag(v_t), and the step is
    θ_{t+1} = Π_Θ(θ_t − α_t m_t / (√v_t + ε)). Keep φ and ψ free of other state: only m, v
    and t are saved by ``state_dict()``.

    Without φ and ψ it uses :func:`adam_moments` (``betas``, ``beta1_decay``), i.e. Adam
    without bias correction; :func:`sgd_moments` gives SGD (Example 1.2.15).
    """

    def __init__(
        self,
        params: ParamsT,
        phi: MomentFn | None = None,
        psi: MomentFn | None = None,
        lr: float = 1e-3,
        betas: tuple[float, float] | None = None,
        eps: float = 1e-8,
        *,
        lr_schedule: str = "constant",
        beta1_decay: float | None = None,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        if (phi is None) != (psi is None):
            raise ValueError("give both phi and psi, or neither (for Adam moments)")
        if phi is None:
            b1, b2 = (0.9, 0.999) if betas is None else betas
            phi, psi = adam_moments(b1, b2, 1.0 if beta1_decay is None else beta1_decay)
        elif betas is not None or beta1_decay is not None:
            raise ValueError(
                "betas and beta1_decay configure the default Adam moments; with your own"
                f" phi and psi they would be ignored (got betas={betas!r},"
                f" beta1_decay={beta1_decay!r})"
            )
        if not callable(phi) or not callable(psi):
            raise ValueError("phi and psi must be callables (prev, grads, t) -> new")
        self.phi: MomentFn = phi
        self.psi: MomentFn = psi
        defaults = {
            "lr": lr,
            "eps": eps,
            "lr_schedule": lr_schedule,
            "bounds": tuple(bounds) if isinstance(bounds, (tuple, list)) else bounds,
            "step": 0,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_adaptive_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One pass of lines 2–6 of Algorithm 2 for every parameter group."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params, grads, (ms, vs) = _gather(self, group, ("m", "v"))
            if not params:
                continue
            t = group["step"] = group["step"] + 1
            alpha_t = group["lr"] * LR_SCHEDULES[group["lr_schedule"]](t)
            new_ms = self.phi(ms, grads, t)  # m_t = φ_t(g_1, …, g_t)
            new_vs = self.psi(vs, grads, t)  # V_t = ψ_t(g_1, …, g_t)
            for key, old, new in (("m", ms, new_ms), ("v", vs, new_vs)):
                if new is not old:
                    if len(new) != len(params):
                        raise ValueError(f"moment function returned {len(new)} tensors")
                    for p, tensor in zip(params, new, strict=True):
                        self.state[p][key] = tensor
            denom = torch._foreach_sqrt(new_vs)
            _descend(params, new_ms, denom, group["eps"], alpha_t)  # θ̂ = θ − α_t m/√V
            _project(params, group["bounds"])  # θ_{t+1} = Π_{Θ,√V_t}(θ̂)
        return loss
