"""Optimizers of §1.2: gradient descent, SGD, Adam, the generic adaptive method and AMSGrad.

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
    "GenericAdaptive",
    "MomentFn",
    "sgd_moments",
    "adam_moments",
    "LR_SCHEDULES",
    "regret",
    "OPTIMIZERS",
    "make_optimizer",
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
            if not params:
                continue
            t = group["step"] = group["step"] + 1
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
        return loss


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
