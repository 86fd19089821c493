"""Optimizers of §1.2: gradient descent, SGD, Adam and AMSGrad (the generic adaptive method
of Algorithm 2 is in :mod:`vaelab.thesis.adaptive`; optimizers by name in
:mod:`vaelab.train.optimizers`).

All are ``torch.optim.Optimizer`` subclasses, so they plug into the usual training loop,
LR schedulers and ``state_dict()`` / ``load_state_dict()``. The moment updates run as
``torch._foreach_*`` operations over all parameters of a group at once; the step counter t
is one Python int per parameter group (stored in the group, so it round-trips with the
state dict) and the bias corrections are Python floats.

Common options of :class:`Adam`, :class:`AMSGrad` and :class:`GenericAdaptive`:

- ``lr``: the step size α; ``lr_schedule`` = ``"constant"`` (α_t = α) or ``"inv_sqrt"``
  (α_t = α/√t, as in Theorem 1.2.17).
- ``betas`` = (β1, β2) and ``beta1_decay`` = λ: β1 follows the schedule β1t = β1·λ^(t−1)
  (Algorithm 3; λ = 1 keeps β1 constant).
- ``eps``: added to √v before dividing, so coordinates that never saw a gradient stay put.
- ``bounds`` = (low, high): after each step, project onto the box Θ = [low, high]^d, the
  Π_{Θ,X} of Def 1.2.12. For the diagonal metrics X = √V_t used here the objective
  ‖X^{1/2}(x − y)‖² = Σ_i √V_ii (x_i − y_i)² splits into one problem per coordinate, each
  solved by clamping y_i to [low, high]; so the projection is coordinate-wise clamping.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

__all__ = [
    "GD",
    "SGD",
    "Adam",
    "AMSGrad",
    "MomentFn",
    "LR_SCHEDULES",
    "regret",
]

ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]]

MomentFn = Callable[[list[Tensor], list[Tensor], int], list[Tensor]]
"""A recursive moment update ``fn(prev, grads, t) -> new`` of Algorithm 2 (see
:class:`GenericAdaptive`)."""


def _constant(t: int) -> float:
    return 1.0


def _inv_sqrt(t: int) -> float:
    return 1.0 / math.sqrt(t)


LR_SCHEDULES: dict[str, Callable[[int], float]] = {
    "constant": _constant,  # α_t = α
    "inv_sqrt": _inv_sqrt,  # α_t = α/√t (Theorem 1.2.17)
}
"""Step-size schedules α_t / α by name, for t = 1, 2, … (Algorithms 2 and 3)."""


# --- validation -----------------------------------------------------------------------------


def _real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_lr(lr: Any) -> None:
    if not _real(lr) or not math.isfinite(lr) or lr < 0:
        raise ValueError(f"lr must be a finite number ≥ 0, got {lr!r}")


def _check_bounds(bounds: Any) -> None:
    if bounds is None:
        return
    ok = isinstance(bounds, (tuple, list)) and len(bounds) == 2 and all(map(_real, bounds))
    if not ok or math.isnan(bounds[0]) or math.isnan(bounds[1]) or bounds[0] > bounds[1]:
        raise ValueError(f"bounds must be (low, high) with low ≤ high, got {bounds!r}")


def _check_adaptive_group(group: dict[str, Any]) -> None:
    """Validate the hyperparameters of one Adam / AMSGrad / GenericAdaptive group."""
    _check_lr(group["lr"])
    betas = group.get("betas")
    if betas is not None:
        ok = isinstance(betas, (tuple, list)) and len(betas) == 2 and all(map(_real, betas))
        if not ok or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
    eps = group["eps"]
    if not _real(eps) or not eps >= 0:
        raise ValueError(f"eps must be a number ≥ 0, got {eps!r}")
    if group["lr_schedule"] not in LR_SCHEDULES:
        raise ValueError(
            f"unknown lr_schedule {group['lr_schedule']!r}; known: {', '.join(LR_SCHEDULES)}"
        )
    lam = group.get("beta1_decay")
    if lam is not None and (not _real(lam) or not 0.0 < lam <= 1.0):
        raise ValueError(f"beta1_decay must be in (0, 1], got {lam!r}")
    _check_bounds(group["bounds"])


def _gather(
    optimizer: Optimizer, group: dict[str, Any], keys: tuple[str, ...]
) -> tuple[list[Tensor], list[Tensor], list[list[Tensor]]]:
    """Parameters with a gradient, their gradients, and their state tensors ``keys``.

    State tensors are created (zeros like the parameter) on first use.
    """
    params: list[Tensor] = []
    grads: list[Tensor] = []
    states: list[list[Tensor]] = [[] for _ in keys]
    state = optimizer.state
    for p in group["params"]:
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            raise ValueError(f"{type(optimizer).__name__} does not support sparse gradients")
        st = state[p]
        if not st:
            for key in keys:
                st[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
        params.append(p)
        grads.append(g)
        for lst, key in zip(states, keys, strict=True):
            lst.append(st[key])
    return params, grads, states


def _project(params: list[Tensor], bounds: tuple[float, float] | None) -> None:
    """Π_Θ onto the box Θ = [low, high]^d: coordinate-wise clamping (Def 1.2.12)."""
    if bounds is not None:
        torch._foreach_clamp_min_(params, float(bounds[0]))
        torch._foreach_clamp_max_(params, float(bounds[1]))


def _closure_loss(closure: Callable[[], Any] | None) -> Any:
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


# --- gradient descent -----------------------------------------------------------------------


class GD(Optimizer):
    """Gradient descent x^(t+1) = x^(t) − γ_t ∂f(x^(t)) (Theorem 1.2.5, Corollary 1.2.7).

    ``lr`` is a constant γ or a callable t ↦ γ_t, called with t = 0, 1, 2, … as in eq. 1.5
    (Theorem 1.2.5 wants γ_t → 0). With a callable, the group's ``lr`` is 1.0 and multiplies
    γ_t, so LR schedulers still compose. Full-batch GD means the caller backpropagates the
    empirical risk of the whole data set (Lemma 1.2.6). ``bounds`` projects onto a box.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float | Callable[[int], float] = 0.1,
        *,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        self._gamma: Callable[[int], float] | None = lr if callable(lr) else None
        base = 1.0 if callable(lr) else lr
        super().__init__(params, {"lr": base, "bounds": bounds, "step": 0})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_lr(self.param_groups[-1]["lr"])
        _check_bounds(self.param_groups[-1]["bounds"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step θ ← θ − γ_t g for every group (eq. 1.5)."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params, grads, _ = _gather(self, group, ())
            if not params:
                continue
            t = group["step"]
            gamma = group["lr"] * (self._gamma(t) if self._gamma is not None else 1.0)
            if not math.isfinite(gamma) or gamma < 0:
                raise ValueError(f"step size γ_{t} must be a finite number ≥ 0, got {gamma!r}")
            torch._foreach_add_(params, grads, alpha=-gamma)
            _project(params, group["bounds"])
            group["step"] = t + 1
        return loss


class SGD(GD):
    """Stochastic gradient descent θ^(t) = θ^(t−1) − γ_{t−1} ∂_{θ,i} R (Theorem 1.2.8).

    The update is that of :class:`GD`; what makes it stochastic is that the caller
    backpropagates the loss of one example (or a mini-batch) instead of the full risk.
    """


# --- Adam and AMSGrad -----------------------------------------------------------------------


class _MomentOptimizer(Optimizer):
    """Shared step of :class:`Adam` and :class:`AMSGrad` (Algorithms 1 and 3)."""

    _amsgrad: bool = False
    _state_keys: tuple[str, ...] = ("exp_avg", "exp_avg_sq")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        bias_correction: bool,
        lr_schedule: str = "constant",
        beta1_decay: float = 1.0,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": tuple(betas) if isinstance(betas, (tuple, list)) else betas,
            "eps": eps,
            "bias_correction": bool(bias_correction),
            "lr_schedule": lr_schedule,
            "beta1_decay": beta1_decay,
            "bounds": tuple(bounds) if isinstance(bounds, (tuple, list)) else bounds,
            "step": 0,
        }
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        _check_adaptive_group(self.param_groups[-1])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One step t ← t + 1 of the moment method for every parameter group."""
        loss = _closure_loss(closure)
        for group in self.param_groups:
            params, grads, states = _gather(self, group, self._state_keys)
            if params:
                group["step"] += 1
                self._group_step(group, params, grads, states)
        return loss

    def _group_step(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], states: list
    ) -> None:
        """Step t = ``group["step"]`` of one group's parameters (Algorithms 1 and 3)."""
        t = group["step"]
        beta1, beta2 = group["betas"]
        lam = group["beta1_decay"]
        beta1_t = beta1 * lam ** (t - 1)  # β1t = β1 λ^(t−1)
        alpha_t = group["lr"] * LR_SCHEDULES[group["lr_schedule"]](t)
        ms, vs = states[0], states[1]

        torch._foreach_lerp_(ms, grads, 1 - beta1_t)  # m_t = β1t m_{t−1} + (1 − β1t) g_t
        torch._foreach_mul_(vs, beta2)  # v_t = β2 v_{t−1} + (1 − β2) g_t²
        torch._foreach_addcmul_(vs, grads, grads, 1 - beta2)
        if self._amsgrad:
            vhats = states[2]
            torch._foreach_maximum_(vhats, vs)  # v̂_t = max(v̂_{t−1}, v_t)
            denom = torch._foreach_sqrt(vhats)
        else:
            denom = torch._foreach_sqrt(vs)
        if group["bias_correction"]:
            # m̂ = m / (1 − Π_{s≤t} β1s), Π β1s = β1^t λ^(t(t−1)/2); v̂ = v / (1 − β2^t)
            bc1 = 1 - beta1**t * lam ** (t * (t - 1) / 2)
            bc2 = 1 - beta2**t
            torch._foreach_div_(denom, bc2**0.5)
            step_size = alpha_t / bc1
        else:
            step_size = alpha_t
        _descend(params, ms, denom, group["eps"], step_size)  # θ −= α_t m / (√v + ε)
        _project(params, group["bounds"])


class Adam(_MomentOptimizer):
    """Adam (Algorithm 1; Kingma & Ba), bias-corrected by default.

    m_t = β1 m_{t−1} + (1 − β1) g_t, v_t = β2 v_{t−1} + (1 − β2) g_t²,
    θ_t = θ_{t−1} − α_t · m̂_t / (√v̂_t + ε) with m̂_t = m_t/(1 − β1^t), v̂_t = v_t/(1 − β2^t).
    With the defaults it follows ``torch.optim.Adam``, except that t counts the steps of the
    parameter group (as in Algorithm 1), not of each parameter: a parameter whose first
    gradient arrives late starts with the group's bias corrections. ``bias_correction=False`` drops
    lines 8–9 — the form of Example 1.2.15 (2). A decaying β1t (``beta1_decay`` < 1) is
    bias-corrected by 1 − Π_{s≤t} β1s. See the module docstring for the common options.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        bias_correction: bool = True,
        lr_schedule: str = "constant",
        beta1_decay: float = 1.0,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            bias_correction=bias_correction,
            lr_schedule=lr_schedule,
            beta1_decay=beta1_decay,
            bounds=bounds,
        )


class AMSGrad(_MomentOptimizer):
    """AMSGrad (Algorithm 3) as Reddi, Kale & Kumar define it.

    m_t = β1t m_{t−1} + (1 − β1t) g_t with β1t = β1 λ^(t−1), v_t = β2 v_{t−1} + (1 − β2) g_t²,
    v̂_t = max(v̂_{t−1}, v_t), θ_{t+1} = Π_Θ(θ_t − α_t m_t / (√v̂_t + ε)). No bias correction
    unless ``bias_correction=True``.

    How it differs from ``torch.optim.Adam(amsgrad=True)``:

    - torch always bias-corrects: its step is (α/(1 − β1^t)) · m / (√v̂/√(1 − β2^t) + ε),
      where v̂ is the running max of the *uncorrected* v, divided afterwards by the current
      correction 1 − β2^t. ``AMSGrad(bias_correction=True, beta1_decay=1.0)`` does exactly
      this (and matches torch); the default ``bias_correction=False`` is Reddi's form.
    - eps: Reddi's algorithm has none; here ε is added to √v̂ (torch adds it to the
      bias-corrected √v̂/√(1 − β2^t) instead, which is the same only with the correction).
    - torch has no β1t schedule, no α/√t schedule (only via an LR scheduler) and no
      projection onto Θ; torch also counts t per parameter, here per group.
    """

    _amsgrad = True
    _state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        *,
        bias_correction: bool = False,
        lr_schedule: str = "constant",
        beta1_decay: float = 1.0,
        bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            bias_correction=bias_correction,
            lr_schedule=lr_schedule,
            beta1_decay=beta1_decay,
            bounds=bounds,
        )


def _descend(
    params: list[Tensor], ms: list[Tensor], denom: list[Tensor], eps: float, step_size: float
) -> None:
    """θ −= step_size · m / (denom + ε). With ε = 0 a zero denom (every g² so far was 0 or
    underflowed: on MNIST the weights of the always-blank corner pixels) becomes 1, so that
    coordinate moves by a negligible m instead of turning NaN (0/0) or jumping (m/tiny)."""
    if eps:
        torch._foreach_add_(denom, eps)
    else:
        for d in denom:
            d.masked_fill_(d == 0, 1.0)
    torch._foreach_addcdiv_(params, ms, denom, -step_size)


# --- regret ---------------------------------------------------------------------------------


def regret(losses: Sequence[float] | Tensor, best: float | Sequence[float] | Tensor) -> Tensor:
    """Cumulative regret R_t = Σ_{s≤t} f_s(θ_s) − min_θ Σ_{s≤t} f_s(θ), t = 1…T (Def 1.2.14).

    ``losses`` are the per-step losses f_t(θ_t). ``best`` is the best fixed point's total
    B_t = min_θ Σ_{s≤t} f_s(θ): either for every horizon t (a length-T sequence, giving R_t
    for all t) or only B_T (a number; then only the last entry is the regret of Def 1.2.14,
    the others are Σ_{s≤t} f_s(θ_s) − B_T). Returns a float64 tensor of shape (T,).
    """
    f = torch.as_tensor(losses).detach().to(torch.float64)
    if f.dim() != 1 or f.numel() == 0:
        raise ValueError(f"losses must be a non-empty 1-D sequence, got shape {tuple(f.shape)}")
    b = torch.as_tensor(best).detach().to(torch.float64)
    if b.dim() > 1 or (b.dim() == 1 and b.shape != f.shape):
        raise ValueError(
            f"best must be a number or one total per step ({f.numel()}), got shape {tuple(b.shape)}"
        )
    return torch.cumsum(f, dim=0) - b  # (T,)
