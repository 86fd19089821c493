"""Losses, empirical risk and information measures (§1.2, §2.2, §3.1) against PyTorch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

from vaelab.thesis.losses import (
    LOSS_TAKES_LOGITS,
    LOSSES,
    bce,
    bce_sum,
    cross_entropy,
    empirical_risk,
    entropy,
    get_loss,
    kl_divergence,
    kl_normal_std,
    linear_error,
    mse,
    mse_mean,
    squared_error,
)
from vaelab.thesis.nn import MLP

SHAPES = [(5,), (5, 3), (5, 1, 4, 4), (2, 3, 5, 7)]


def _pair(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(shape, generator=g, dtype=torch.float64),
        torch.rand(shape, generator=g, dtype=torch.float64),
    )


def _dims(t):
    return tuple(range(1, t.dim()))


@pytest.mark.parametrize("shape", SHAPES)
def test_losses_against_torch_functional(shape):
    y, t = _pair(shape)
    d = _dims(y)
    sq = F.mse_loss(y, t, reduction="none")
    torch.testing.assert_close(squared_error(y, t), sq.sum(d) if d else sq)
    l1 = F.l1_loss(y, t, reduction="none")
    torch.testing.assert_close(linear_error(y, t), l1.sum(d) if d else l1)
    torch.testing.assert_close(mse(y, t), squared_error(y, t))
    torch.testing.assert_close(mse_mean(y, t), sq.mean(d) if d else sq)
    per_example_mean = torch.stack([F.mse_loss(y[i], t[i]) for i in range(shape[0])])
    torch.testing.assert_close(mse_mean(y, t), per_example_mean)
    p = torch.sigmoid(y)
    ref = F.binary_cross_entropy(p, t, reduction="none")
    torch.testing.assert_close(bce(y, t), ref.mean(d) if d else ref)
    torch.testing.assert_close(bce_sum(y, t), ref.sum(d) if d else ref)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("shape", SHAPES)
def test_every_loss_returns_one_float_per_example(name, shape):
    y, t = _pair(shape)
    out = LOSSES[name](y.float(), t.float())
    assert out.shape == (shape[0],) and out.dtype == torch.float32


def test_bce_is_the_formula_of_example_2_2_2():
    y, t = _pair((4, 1, 6, 6), seed=3)
    f = torch.sigmoid(y)
    formula = -(t * torch.log(f) + (1 - t) * torch.log(1 - f)).mean(dim=(1, 2, 3))  # 1/(MN) Σ
    torch.testing.assert_close(bce(y, t), formula)


def test_bce_sum_is_the_bernoulli_negative_log_likelihood():
    logits = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    x = (torch.rand(4, 1, 5, 5, dtype=torch.float64) > 0.5).to(torch.float64)
    nll = -D.Bernoulli(logits=logits).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(bce_sum(logits, x), nll)


def test_bce_stays_finite_for_extreme_logits():
    logits = torch.tensor([[200.0, -200.0]])
    target = torch.tensor([[0.0, 1.0]])
    assert torch.isfinite(bce(logits, target)).all()
    torch.testing.assert_close(bce_sum(logits, target), torch.tensor([400.0]))


def test_registry_and_logit_flags():
    assert set(LOSSES) == {"squared_error", "linear_error", "mse", "mse_mean", "bce", "bce_sum"}
    assert {k for k, v in LOSS_TAKES_LOGITS.items() if v} == {"bce", "bce_sum"}
    assert set(LOSS_TAKES_LOGITS) == set(LOSSES)
    assert get_loss("mse") is mse
    with pytest.raises(ValueError, match="huber.*squared_error"):
        get_loss("huber")


def test_losses_reject_bad_shapes():
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(3, 5\)"):
        mse(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="batch"):
        bce(torch.tensor(0.0), torch.tensor(1.0))


# --- empirical risk (Def 1.2.4, Lemma 1.2.6) --------------------------------------------------


def _net():
    torch.manual_seed(0)
    return MLP([4, 6, 4], activation="tanh").double()


def test_empirical_risk_is_the_mean_loss_in_any_batching():
    net = _net()
    x = torch.randn(23, 4, dtype=torch.float64)
    per_example = squared_error(net(x), x)
    for batch_size in (1, 5, 23, 1024):
        r = empirical_risk(squared_error, net, x, batch_size=batch_size)
        torch.testing.assert_close(r, per_example.mean())


def test_gradient_of_the_risk_is_the_mean_of_per_example_gradients():
    net = _net()
    x = torch.randn(23, 4, dtype=torch.float64)
    y = torch.randn(23, 4, dtype=torch.float64)
    params = list(net.parameters())
    risk = empirical_risk("linear_error", net, (x, y), batch_size=7)
    grads = torch.autograd.grad(risk, params)
    one_by_one = [torch.zeros_like(p) for p in params]
    for i in range(23):  # ∂_θ L(x_i, y_i, f_θ(x_i)), one example at a time
        gi = torch.autograd.grad(linear_error(net(x[i : i + 1]), y[i : i + 1]).sum(), params)
        for acc, g in zip(one_by_one, gi, strict=True):
            acc += g / 23
    for g, ref in zip(grads, one_by_one, strict=True):
        torch.testing.assert_close(g, ref, atol=1e-6, rtol=0)


def test_empirical_risk_rejects_bad_input():
    net = _net()
    x = torch.randn(5, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="one value per example"):
        empirical_risk(lambda p, t: F.mse_loss(p, t), net, x)
    with pytest.raises(ValueError, match="batch_size"):
        empirical_risk(mse, net, x, batch_size=0)
    with pytest.raises(ValueError, match="5 and 4"):
        empirical_risk(mse, net, (x, x[:4]))
    with pytest.raises(ValueError, match="pair"):
        empirical_risk(mse, net, [x])


# --- information measures (Def 3.1.1–3.1.3, Remark 3.1.4) -------------------------------------


def _pairs():
    g = torch.Generator().manual_seed(0)

    def r(*s):
        return torch.randn(*s, generator=g, dtype=torch.float64)

    return {
        "normal": (D.Normal(r(3), r(3).exp()), D.Normal(r(3), r(3).exp())),
        "diag_gaussian": (
            D.Independent(D.Normal(r(2, 5), r(2, 5).exp()), 1),
            D.Independent(D.Normal(r(2, 5), r(2, 5).exp()), 1),
        ),
        "bernoulli": (D.Bernoulli(logits=r(4)), D.Bernoulli(logits=r(4))),
        "categorical": (D.Categorical(logits=r(3, 6)), D.Categorical(logits=r(3, 6))),
    }


@pytest.mark.parametrize("kind", sorted(_pairs()))
def test_closed_forms_agree_with_torch(kind):
    p, q = _pairs()[kind]
    torch.testing.assert_close(kl_divergence(p, q), D.kl_divergence(p, q), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(entropy(p), p.entropy(), atol=1e-5, rtol=1e-5)
    ce_torch = D.kl_divergence(p, q) + p.entropy()
    torch.testing.assert_close(cross_entropy(p, q), ce_torch, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", sorted(_pairs()))
def test_kl_is_cross_entropy_minus_entropy(kind):
    p, q = _pairs()[kind]
    torch.testing.assert_close(kl_divergence(p, q), cross_entropy(p, q) - entropy(p))
    assert (kl_divergence(p, q) >= 0).all()
    torch.testing.assert_close(kl_divergence(p, p), torch.zeros_like(entropy(p)))


def test_categorical_measures_with_impossible_classes_agree_with_torch():
    """Classes of probability 0 (logit −inf): 0 · log 0 is 0, not NaN; mass on a class the
    other distribution rules out makes KL and cross-entropy +inf."""
    inf = math.inf
    p = D.Categorical(logits=torch.tensor([[-inf, 0.0, 0.0], [-inf, 0.0, 1.0]]))
    q = D.Categorical(logits=torch.tensor([[-inf, 1.0, 0.0], [0.0, -inf, 0.0]]))
    torch.testing.assert_close(entropy(p), p.entropy())
    torch.testing.assert_close(kl_divergence(p, q), D.kl_divergence(p, q))
    torch.testing.assert_close(kl_divergence(p, p), torch.zeros(2))
    ce = cross_entropy(p, q)
    torch.testing.assert_close(ce[0], (D.kl_divergence(p, q) + p.entropy())[0])
    assert ce[1] == inf


def _mc_close(estimate, samples_fn, exact, n):
    """|estimate − exact| within 5 standard errors, the error taken from fresh samples."""
    se = samples_fn().std(dim=0) / math.sqrt(n)
    assert ((estimate - exact).abs() <= 5 * se + 1e-9).all(), (estimate, exact, se)


def test_monte_carlo_estimates_when_asked():
    torch.manual_seed(0)
    p, q = _pairs()["normal"]
    n = 20_000
    est = kl_divergence(p, q, n_samples=n)
    _mc_close(
        est, lambda: p.log_prob(x := p.sample((n,))) - q.log_prob(x), D.kl_divergence(p, q), n
    )
    est = entropy(p, n_samples=n)
    _mc_close(est, lambda: -p.log_prob(p.sample((n,))), p.entropy(), n)
    est = cross_entropy(p, q, n_samples=n)
    _mc_close(est, lambda: -q.log_prob(p.sample((n,))), D.kl_divergence(p, q) + p.entropy(), n)


def test_monte_carlo_fallback_without_a_closed_form():
    torch.manual_seed(1)
    p = D.Laplace(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    q = D.Laplace(torch.tensor([0.5, 0.0]), torch.tensor([2.0, 1.0]))
    n = 10_000  # the default sample size
    exact = D.kl_divergence(p, q)
    _mc_close(
        kl_divergence(p, q), lambda: p.log_prob(x := p.sample((n,))) - q.log_prob(x), exact, n
    )
    _mc_close(entropy(p), lambda: -p.log_prob(p.sample((n,))), p.entropy(), n)


def test_monte_carlo_estimate_is_differentiable():
    """Reparameterised: d KL(N(μ,1) ‖ N(1,1)) / dμ = μ − 1 = −1 at μ = 0. A plain sample()
    would give a finite but wrong gradient (about −0.07)."""
    torch.manual_seed(0)
    loc = torch.zeros(2, requires_grad=True)
    p, q = D.Normal(loc, torch.ones(2)), D.Normal(torch.ones(2), torch.ones(2))
    kl_divergence(p, q, n_samples=20_000).sum().backward()
    # the per-sample gradient (z − 1) − (z − μ) = μ − 1 is constant here: no noise at all
    torch.testing.assert_close(loc.grad, torch.full((2,), -1.0), atol=0.03, rtol=0)


def test_information_measures_reject_bad_input():
    p = D.Normal(torch.zeros(2), torch.ones(2))
    with pytest.raises(ValueError, match="event shape"):
        kl_divergence(p, D.Independent(p, 1))
    with pytest.raises(ValueError, match="torch.distributions"):
        entropy(torch.zeros(2))
    with pytest.raises(ValueError, match="n_samples"):
        entropy(p, n_samples=0)


def test_kl_normal_std_matches_torch():
    g = torch.Generator().manual_seed(2)
    mu = torch.randn(6, 4, generator=g, dtype=torch.float64)
    logvar = torch.randn(6, 4, generator=g, dtype=torch.float64)
    q = D.Independent(D.Normal(mu, torch.exp(0.5 * logvar)), 1)
    prior = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
    out = kl_normal_std(mu, logvar)
    assert out.shape == (6,)
    torch.testing.assert_close(out, D.kl_divergence(q, prior), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(6, 4\).*\(6, 3\)"):
        kl_normal_std(mu, logvar[:, :3])


def test_normal_log_prob_matches_torch():
    from torch.distributions import Independent, Normal

    from vaelab.thesis.losses import normal_log_prob

    g = torch.Generator().manual_seed(0)
    z, mu, logvar = (torch.randn(4, 3, 5, generator=g, dtype=torch.float64) for _ in range(3))
    ref = Independent(Normal(mu, torch.exp(0.5 * logvar)), 1).log_prob(z)
    out = normal_log_prob(z, mu, logvar)
    assert out.shape == (4, 3)
    torch.testing.assert_close(out, ref)
    zero = z.new_zeros(())
    std = Independent(Normal(torch.zeros_like(z), torch.ones_like(z)), 1).log_prob(z)
    torch.testing.assert_close(normal_log_prob(z, zero, zero), std)


def test_continuous_bernoulli_nan_logits_give_nan_not_an_exception():
    from vaelab.models.likelihoods import LIKELIHOODS

    log_prob, mean = LIKELIHOODS["continuous_bernoulli"]
    logits = torch.full((2, 1, 3, 3), float("nan"))
    assert torch.isnan(log_prob(logits, torch.rand(2, 1, 3, 3))).all()
    assert torch.isnan(mean(logits)).all()


def test_continuous_bernoulli_is_exact_where_the_logits_saturate():
    """Against torch's ContinuousBernoulli in float64 (whose clamp of λ at 2e-16 is far
    away for |ℓ| ≤ 30): log-density, its gradient and the mean, from ℓ = 0 (the series)
    through the series' edge at 0.1 to the saturated logits of a CB-VAE's background
    pixels, where a float32 ContinuousBernoulli is 0.6 nats off and has no gradient."""
    from vaelab.models.likelihoods import LIKELIHOODS

    log_prob, mean = LIKELIHOODS["continuous_bernoulli"]
    ell = torch.tensor([-30, -17, -5, -0.5, -0.1001, -0.0999, -0.05, -1e-4, 0.0, 1e-4, 0.05,
                        0.0999, 0.1001, 0.5, 5, 17, 30], dtype=torch.float64)  # fmt: skip
    x = torch.linspace(0, 1, len(ell), dtype=torch.float64)
    ref_ell = ell.clone().requires_grad_()
    ref = D.ContinuousBernoulli(logits=ref_ell).log_prob(x)
    (ref_grad,) = torch.autograd.grad(ref.sum(), ref_ell)
    ours_ell = ell.float().requires_grad_()
    ours = log_prob(ours_ell.reshape(-1, 1, 1, 1), x.float().reshape(-1, 1, 1, 1))
    (ours_grad,) = torch.autograd.grad(ours.sum(), ours_ell)
    # 1e-4: float64 torch itself loses ~1e-5 at ℓ = 30, where 1 − 2λ cancels to 2e-13
    torch.testing.assert_close(ours.double(), ref.detach(), atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(ours_grad.double(), ref_grad, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(mean(ell.float()).double(), D.ContinuousBernoulli(logits=ell).mean,
                               atol=1e-6, rtol=1e-5)  # fmt: skip
    # the float32 distribution's clamp, which this replaces, is 0.6 nats off at ℓ = 30
    off = D.ContinuousBernoulli(logits=torch.tensor(30.0)).log_prob(torch.tensor(1.0))
    assert abs(float(off) - float(ref[-1].detach())) > 0.5
