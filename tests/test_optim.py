"""Optimizers of §1.2 against torch.optim and hand-written references."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import vaelab.files as files
import vaelab.runs.folder as runs_folder
from vaelab.thesis.adaptive import GenericAdaptive, adam_moments, sgd_moments
from vaelab.thesis.nn import MLP
from vaelab.thesis.optim import GD, SGD, Adam, AMSGrad, regret
from vaelab.train.optimizers import (
    OPTIMIZERS,
    KernelAdam,
    KernelAMSGrad,
    kernel_available,
    make_optimizer,
)


def _problem(seed: int = 0, dtype=torch.float32):
    """A small random MLP and a regression batch."""
    torch.manual_seed(seed)
    net = MLP([6, 16, 16, 3], activation="tanh").to(dtype)
    x = torch.randn(64, 6, dtype=dtype)
    y = torch.randn(64, 3, dtype=dtype)
    return net, x, y


def _step(net, opt, x, y, t):
    """One optimizer step on a mini-batch that changes with t (a stochastic objective)."""
    idx = torch.arange(t % 4 * 16, t % 4 * 16 + 16)
    opt.zero_grad()
    ((net(x[idx]) - y[idx]) ** 2).mean().backward()
    opt.step()


def _trajectories_match(make_a, make_b, steps, atol, dtype=torch.float32, schedule_b=None):
    net_a, x, y = _problem(dtype=dtype)
    net_b = copy.deepcopy(net_a)
    opt_a, opt_b = make_a(net_a.parameters()), make_b(net_b.parameters())
    sched = schedule_b(opt_b) if schedule_b else None
    for t in range(steps):
        _step(net_a, opt_a, x, y, t)
        _step(net_b, opt_b, x, y, t)
        if sched is not None:
            sched.step()
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=atol, rtol=0)
    return net_a


# --- against torch.optim ----------------------------------------------------------------------


def test_adam_follows_torch_adam():
    net = _trajectories_match(
        lambda p: Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-7),
        lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.8, 0.99), eps=1e-7, foreach=True),
        steps=200,
        atol=1e-6,
    )
    assert not torch.equal(next(net.parameters()), _problem()[0].state_dict()["0.weight"])


def test_adam_inv_sqrt_schedule_follows_torch_with_lambda_lr():
    _trajectories_match(
        lambda p: Adam(p, lr=1e-2, lr_schedule="inv_sqrt"),
        lambda p: torch.optim.Adam(p, lr=1e-2),
        steps=100,
        atol=1e-6,
        schedule_b=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1 / math.sqrt(e + 1)),
    )


def test_amsgrad_with_bias_correction_follows_torch_amsgrad():
    _trajectories_match(
        lambda p: AMSGrad(p, lr=1e-2, bias_correction=True, beta1_decay=1.0),
        lambda p: torch.optim.Adam(p, lr=1e-2, amsgrad=True, foreach=True),
        steps=200,
        atol=1e-6,
    )


needs_kernel = pytest.mark.skipif(
    not kernel_available(torch.device("cpu"), torch.float32),
    reason="this torch has no fused Adam kernel on the CPU",
)


@needs_kernel
@pytest.mark.parametrize(
    "kernel, reference",
    [
        (KernelAdam, Adam),
        (KernelAMSGrad, AMSGrad),  # Reddi's form: no bias correction
        (lambda p, **kw: KernelAMSGrad(p, bias_correction=True, **kw),
         lambda p, **kw: AMSGrad(p, bias_correction=True, **kw)),
        (lambda p, **kw: KernelAdam(p, bias_correction=False, **kw),
         lambda p, **kw: Adam(p, bias_correction=False, **kw)),
    ],
)  # fmt: skip
def test_kernel_step_equals_the_thesis_step(kernel, reference):
    """The fused kernel computes the thesis's update: both paths to 1e-6 over 200 steps in
    float32, and to 1e-12 in float64 (where rounding cannot hide a wrong formula)."""
    opts = {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-7}
    net = _trajectories_match(lambda p: kernel(p, **opts), lambda p: reference(p, **opts),
                              steps=200, atol=1e-12, dtype=torch.float64)  # fmt: skip
    assert not torch.equal(next(net.parameters()), _problem(dtype=torch.float64)[0][0].weight)
    _trajectories_match(lambda p: kernel(p, **opts), lambda p: reference(p, **opts),
                        steps=50, atol=1e-6)  # fmt: skip


@needs_kernel
def test_kernel_runs_only_where_it_computes_the_same_step(monkeypatch):
    """Options the kernel lacks (β1 schedule, α/√t, a box, ε = 0) and kernel=False take the
    reference path; the plain options take the kernel. Counted by wrapping the kernel."""
    calls = []
    real = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(1) or real(*a, **k))
    net, x, y = _problem()
    for kw, used in [({}, True), ({"beta1_decay": 0.9}, False), ({"lr_schedule": "inv_sqrt"}, False),
                     ({"bounds": (-1, 1)}, False), ({"eps": 0.0}, False), ({"kernel": False}, False)]:  # fmt: skip
        calls.clear()
        _step(net, KernelAMSGrad(net.parameters(), lr=1e-2, **kw), x, y, 0)
        assert bool(calls) is used, kw


@needs_kernel
def test_a_checkpoint_without_the_kernel_entry_resumes_on_the_reference_path():
    """Optimizer state written before the kernel existed (no ``kernel`` in its groups)
    continues exactly as the thesis's Adam would: bit for bit."""
    net_a, x, y = _problem()
    net_b = copy.deepcopy(net_a)
    opt_a, opt_b = Adam(net_a.parameters(), lr=1e-2), KernelAdam(net_b.parameters(), lr=1e-2)
    for t in range(5):
        _step(net_a, opt_a, x, y, t)
    old = copy.deepcopy(opt_a.state_dict())
    assert "kernel" not in old["param_groups"][0]
    net_b.load_state_dict(net_a.state_dict())
    opt_b.load_state_dict(old)
    for t in range(5, 30):
        _step(net_a, opt_a, x, y, t)
        _step(net_b, opt_b, x, y, t)
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        assert torch.equal(pa, pb)


@needs_kernel
def test_kernel_state_resumes_on_the_reference_path():
    """Same state, same names: a checkpoint of one path continues on the other."""
    net_a, x, y = _problem()
    net_b = copy.deepcopy(net_a)
    opt_a, opt_b = KernelAdam(net_a.parameters(), lr=1e-2), KernelAdam(net_b.parameters(), lr=1e-2)
    for t in range(5):
        _step(net_a, opt_a, x, y, t)
    net_b.load_state_dict(net_a.state_dict())
    state = copy.deepcopy(opt_a.state_dict())  # not sharing opt_a's tensors
    state["param_groups"][0]["kernel"] = False  # as on a device the kernel does not run on
    opt_b.load_state_dict(state)
    for t in range(5, 30):
        _step(net_a, opt_a, x, y, t)
        _step(net_b, opt_b, x, y, t)
    for pa, pb in zip(net_a.parameters(), net_b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls", [GD, SGD])
def test_gd_and_sgd_follow_torch_sgd(cls):
    _trajectories_match(
        lambda p: cls(p, lr=0.05), lambda p: torch.optim.SGD(p, lr=0.05), steps=100, atol=1e-6
    )


def test_generic_with_sgd_moments_is_sgd():
    _trajectories_match(
        lambda p: GenericAdaptive(p, *sgd_moments(), lr=0.05, eps=0.0),
        lambda p: torch.optim.SGD(p, lr=0.05),
        steps=50,
        atol=1e-6,
    )


def test_sgd_moments_is_sgd_for_a_parameter_whose_gradients_start_late():
    a0, b0 = torch.tensor([1.0, -2.0]), torch.tensor([0.5])
    runs = []
    for make in (lambda p: GenericAdaptive(p, *sgd_moments(), lr=0.1, eps=0.0),
                 lambda p: torch.optim.SGD(p, lr=0.1)):  # fmt: skip
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        opt = make([a, b])
        for t in range(1, 6):
            opt.zero_grad()
            loss = a.square().sum() + (b.square().sum() if t >= 3 else 0.0)  # b from step 3
            loss.backward()
            opt.step()
        runs.append((a.detach(), b.detach()))
    torch.testing.assert_close(runs[0], runs[1])


@pytest.mark.parametrize("cls", [Adam, AMSGrad])
def test_eps_zero_leaves_never_moved_coordinates_alone(cls):
    """With ε = 0, m/√v is 0/0 where every gradient so far was 0 (MNIST's blank corners)."""
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    opt = cls([w], lr=0.1, eps=0.0)
    for _ in range(3):
        opt.zero_grad()
        (w[0] ** 2).backward()  # w[1] gets gradient 0 at every step
        opt.step()
    w = w.detach()
    assert torch.isfinite(w).all() and float(w[1]) == 2.0 and float(w[0]) < 1.0
    # a gradient whose square underflows to 0 moves the coordinate negligibly, not by m/tiny
    u = torch.tensor([1.0], requires_grad=True)
    opt = cls([u], lr=1e-3, eps=0.0)
    (u * 1e-23).sum().backward()
    opt.step()
    assert abs(float(u.detach()) - 1.0) < 1e-6


# --- against our own definitions -------------------------------------------------------------


def test_generic_with_adam_moments_is_adam_without_bias_correction():
    _trajectories_match(
        lambda p: GenericAdaptive(p, *adam_moments(0.9, 0.99), lr=1e-2),
        lambda p: Adam(p, lr=1e-2, betas=(0.9, 0.99), bias_correction=False),
        steps=100,
        atol=0.0,
    )
    _trajectories_match(  # the default moments, with a β1 schedule and α/√t
        lambda p: GenericAdaptive(p, lr=1e-2, beta1_decay=0.99, lr_schedule="inv_sqrt"),
        lambda p: Adam(p, lr=1e-2, bias_correction=False, beta1_decay=0.99, lr_schedule="inv_sqrt"),
        steps=50,
        atol=0.0,
    )


def _reference(grads, alpha, beta1, beta2, eps, lam=1.0, amsgrad=False, bias=False, inv_sqrt=False):
    """Algorithms 1 and 3 on a linear objective f_t(θ) = <g_t, θ>, written from the sums of
    Example 1.2.15: m_t = Σ_i (1 − β1i) Π_{j>i} β1j g_i, v_t = (1 − β2) Σ_i β2^{t−i} g_i²."""
    theta = torch.zeros_like(grads[0])
    vhat = torch.zeros_like(theta)
    for t in range(1, len(grads) + 1):
        b1 = [beta1 * lam ** (i - 1) for i in range(1, t + 1)]
        m = sum((1 - b1[i - 1]) * math.prod(b1[i:]) * grads[i - 1] for i in range(1, t + 1))
        v = (1 - beta2) * sum(beta2 ** (t - i) * grads[i - 1] ** 2 for i in range(1, t + 1))
        if amsgrad:
            vhat = torch.maximum(vhat, v)
            v = vhat
        a = alpha / math.sqrt(t) if inv_sqrt else alpha
        if bias:
            m = m / (1 - math.prod(b1))
            v = v / (1 - beta2**t)
        theta = theta - a * m / (v.sqrt() + eps)
    return theta


@pytest.mark.parametrize(
    "cls, kw",
    [
        (Adam, {}),
        (Adam, {"bias_correction": False, "beta1_decay": 0.9, "lr_schedule": "inv_sqrt"}),
        (AMSGrad, {}),
        (AMSGrad, {"beta1_decay": 0.95, "lr_schedule": "inv_sqrt"}),
        (AMSGrad, {"bias_correction": True, "beta1_decay": 0.95}),
    ],
)
def test_adaptive_methods_against_the_algorithms(cls, kw):
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, generator=g, dtype=torch.float64) * (t % 3 + 1) for t in range(30)]
    theta = torch.zeros(5, dtype=torch.float64, requires_grad=True)
    opt = cls([theta], lr=0.1, betas=(0.9, 0.95), eps=1e-3, **kw)
    for grad in grads:
        theta.grad = grad.clone()
        opt.step()
    ref = _reference(
        grads,
        0.1,
        0.9,
        0.95,
        1e-3,
        lam=kw.get("beta1_decay", 1.0),
        amsgrad=cls is AMSGrad,
        bias=kw.get("bias_correction", cls is Adam),
        inv_sqrt=kw.get("lr_schedule") == "inv_sqrt",
    )
    torch.testing.assert_close(theta.detach(), ref, atol=1e-10, rtol=1e-10)


def test_gd_converges_on_a_strictly_convex_quadratic():
    """f(x) = ½ xᵀAx − bᵀx with A ≻ 0 has the unique minimiser A⁻¹b (Theorem 1.2.5)."""
    g = torch.Generator().manual_seed(0)
    m = torch.randn(4, 4, generator=g, dtype=torch.float64)
    a = m @ m.T + 0.5 * torch.eye(4, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(a, b)
    big = torch.linalg.eigvalsh(a).max().item()
    for lr in (1.0 / big, lambda t: 1.0 / (big * (1 + t) ** 0.25)):  # constant, and γ_t → 0
        x = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        opt = GD([x], lr=lr)
        for _ in range(5000):
            opt.zero_grad()
            (0.5 * x @ a @ x - b @ x).backward()
            opt.step()
        torch.testing.assert_close(x.detach(), x_star, atol=1e-8, rtol=0)


def test_gd_step_size_sequence_starts_at_gamma_0():
    x = torch.ones(2, requires_grad=True)
    seen = []
    opt = GD([x], lr=lambda t: seen.append(t) or 0.5 ** (t + 1))
    for _ in range(3):
        x.grad = torch.ones(2)
        opt.step()
    assert seen == [0, 1, 2]
    torch.testing.assert_close(x.detach(), torch.full((2,), 1 - 0.5 - 0.25 - 0.125))


@pytest.mark.parametrize("cls", [Adam, AMSGrad, GenericAdaptive, GD])
def test_bounds_clamp_to_the_box(cls):
    torch.manual_seed(0)
    theta = torch.randn(50).mul_(0.05).requires_grad_()
    free = theta.detach().clone().requires_grad_()
    bounded_opt, free_opt = cls([theta], lr=0.1, bounds=(-0.1, 0.1)), cls([free], lr=0.1)
    for p in (theta, free):
        p.grad = torch.linspace(-1, 1, 50)
    bounded_opt.step()
    free_opt.step()
    assert (theta.abs() <= 0.1).all() and (free.abs() > 0.1).any()
    torch.testing.assert_close(theta.detach(), free.detach().clamp(-0.1, 0.1))


# --- state dict round trip ----------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda p: Adam(p, lr=1e-2),
        lambda p: KernelAdam(p, lr=1e-2),
        lambda p: AMSGrad(p, lr=1e-2, beta1_decay=0.9, lr_schedule="inv_sqrt", bounds=(-1, 1)),
        lambda p: GenericAdaptive(p, lr=1e-2),
        lambda p: GenericAdaptive(p, *sgd_moments(), lr=1e-2),
        lambda p: GD(p, lr=lambda t: 0.1 / (t + 1)),
        lambda p: SGD(p, lr=0.1),
    ],
)
def test_state_dict_round_trip_is_bitwise(make, tmp_path):
    """Through the checkpoint's own format: safetensors plus JSON (which turns tuples into
    lists), never pickle."""

    net, x, y = _problem()
    straight = copy.deepcopy(net)
    opt = make(net.parameters())
    opt_straight = make(straight.parameters())
    for t in range(5):
        _step(net, opt, x, y, t)
        _step(straight, opt_straight, x, y, t)
    files.write_tensors(tmp_path / "model.safetensors", net.state_dict())
    files.write_tensors(tmp_path / "optim.safetensors", *runs_folder.optimizer_to_tensors(opt))
    resumed = copy.deepcopy(_problem()[0])
    resumed.load_state_dict(files.read_tensors(tmp_path / "model.safetensors")[0])
    opt_resumed = make(resumed.parameters())
    tensors, meta, _ = files.read_tensors(tmp_path / "optim.safetensors")
    runs_folder.optimizer_from_tensors(opt_resumed, tensors, meta)
    for t in range(5, 10):
        _step(resumed, opt_resumed, x, y, t)
        _step(straight, opt_straight, x, y, t)
    for a, b in zip(resumed.parameters(), straight.parameters(), strict=True):
        assert torch.equal(a, b)


# --- regret (Def 1.2.14) --------------------------------------------------------------------


def test_regret_against_brute_force():
    """Online linear losses f_t(θ) = g_t θ on Θ = [−1, 1]: min_θ Σ f_t = −|Σ g_t|."""
    g = torch.tensor([3.0, -1.0, -1.0, -4.0, 2.0], dtype=torch.float64)
    thetas = torch.tensor([0.0, -0.5, 0.2, 0.9, 1.0], dtype=torch.float64)
    grid = torch.linspace(-1, 1, 2001, dtype=torch.float64)
    best = torch.stack([(g[: t + 1, None] * grid).sum(0).min() for t in range(5)])
    r = regret(g * thetas, best)
    expected = [0.0 + 3.0, 0.5 + 2.0, 0.3 + 1.0, -3.3 + 3.0, -1.3 + 1.0]
    torch.testing.assert_close(r, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(
        regret([1.0, 2.0, 3.0], 4.0), torch.tensor([-3.0, -1.0, 2.0]).double()
    )


def test_regret_rejects_bad_input():
    with pytest.raises(ValueError, match="best"):
        regret([1.0, 2.0], [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="losses"):
        regret([], 0.0)


# --- registry and validation -------------------------------------------------------------------


def test_make_optimizer_prefers_ours_then_torch():
    params = [torch.zeros(2, requires_grad=True)]
    assert set(OPTIMIZERS) == {"gd", "sgd", "adam", "amsgrad"}
    assert type(make_optimizer("adam", params, lr=1e-3)) is KernelAdam
    assert type(make_optimizer("AMSGrad", params, lr=1e-3)) is KernelAMSGrad
    assert type(make_optimizer("AdamW", params, lr=1e-3)) is torch.optim.AdamW
    assert type(make_optimizer("torch.Adam", params, lr=1e-3)) is torch.optim.Adam
    assert type(make_optimizer("torch.optim.SGD", params, lr=1e-3)) is torch.optim.SGD
    opt = make_optimizer("adam", params, lr=1e-3, betas=(0.5, 0.9), bounds=(-1, 1))
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)
    with pytest.raises(ValueError, match="adamx.*amsgrad.*torch.AdamW"):
        make_optimizer("adamx", params, lr=1e-3)
    with pytest.raises(ValueError, match="momentum"):
        make_optimizer("adam", params, lr=1e-3, momentum=0.9)
    # torch classes a backward-then-step loop cannot drive are refused up front
    for name, why in [("LBFGS", "closure"), ("torch.SparseAdam", "sparse")]:
        with pytest.raises(ValueError, match=why):
            make_optimizer(name, params, lr=1e-3)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"betas": (0.9, 1.0)}, "betas"),
        ({"betas": (0.9,)}, "betas"),
        ({"eps": -1e-8}, "eps"),
        ({"lr_schedule": "cosine"}, "cosine.*inv_sqrt"),
        ({"beta1_decay": 0.0}, "beta1_decay"),
        ({"bounds": (1.0, -1.0)}, "bounds"),
    ],
)
@pytest.mark.parametrize("cls", [Adam, AMSGrad])
def test_bad_hyperparameters_raise(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.zeros(1, requires_grad=True)], **kw)


def test_generic_adaptive_argument_checks():
    p = [torch.zeros(1, requires_grad=True)]
    phi, psi = sgd_moments()
    with pytest.raises(ValueError, match="both"):
        GenericAdaptive(p, phi)
    with pytest.raises(ValueError, match="betas"):
        GenericAdaptive(p, phi, psi, betas=(0.9, 0.99))
    with pytest.raises(ValueError, match="beta2"):
        adam_moments(0.9, 1.5)
    with pytest.raises(ValueError, match="lr"):
        GD(p, lr=-0.1)
    x = torch.ones(1, requires_grad=True)
    opt = GD([x], lr=lambda t: float("inf"))
    x.grad = torch.ones(1)
    with pytest.raises(ValueError, match="γ_0"):
        opt.step()
