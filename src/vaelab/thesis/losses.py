"""Loss functions, empirical risk and information measures (§1.2, §2.2, §3.1).

Every loss takes batched tensors (batch dimension first, any trailing shape) and returns
one value per example, shape (B,). Log-likelihood terms are in nats.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import (
    Bernoulli,
    Categorical,
    Distribution,
    Independent,
    Normal,
)

from vaelab.errors import is_count

__all__ = [
    "squared_error",
    "linear_error",
    "mse",
    "mse_mean",
    "bce",
    "bce_sum",
    "LOSSES",
    "LOSS_TAKES_LOGITS",
    "get_loss",
    "empirical_risk",
    "kl_divergence",
    "entropy",
    "cross_entropy",
    "kl_normal_std",
    "normal_log_prob",
    "MC_SAMPLES",
]

MC_SAMPLES = 10_000
"""Monte Carlo sample size used when a measure has no closed form and none is given."""


def _per_example(pred: Tensor, target: Tensor, what: str) -> tuple[Tensor, Tensor]:
    """Validate a (prediction, target) pair and view both as (B, n), floating."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor):
        raise ValueError(
            f"{what} takes tensors, got {type(pred).__name__} and {type(target).__name__}"
        )
    if pred.shape != target.shape:
        raise ValueError(
            f"{what}: prediction shape {tuple(pred.shape)} != target shape {tuple(target.shape)}"
        )
    if pred.dim() == 0:
        raise ValueError(f"{what} needs a batch dimension first, got a scalar")
    dtype = torch.promote_types(pred.dtype, target.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    b = pred.shape[0]
    return pred.to(dtype).reshape(b, -1), target.to(dtype).reshape(b, -1)  # (B, …) -> (B, n)


def squared_error(pred: Tensor, target: Tensor) -> Tensor:
    """Squared error loss Σ_i |y_i − t_i|² per example (Example 1.2.2), shape (B,)."""
    y, t = _per_example(pred, target, "squared_error")
    return (y - t).square().sum(dim=1)  # (B, n) -> (B,)


def linear_error(pred: Tensor, target: Tensor) -> Tensor:
    """Linear error loss Σ_i |y_i − t_i| per example (Example 1.2.2), shape (B,)."""
    y, t = _per_example(pred, target, "linear_error")
    return (y - t).abs().sum(dim=1)  # (B, n) -> (B,)


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """The thesis's image MSE Σ_ij ‖ψ_ij − f(ψ)_ij‖² (Example 2.2.2): a SUM over pixels.

    Despite the name it is not averaged; it equals :func:`squared_error`. Shape (B,).
    """
    return squared_error(pred, target)


def mse_mean(pred: Tensor, target: Tensor) -> Tensor:
    """Per-element mean of the squared error, i.e. :func:`mse` / (C·H·W); shape (B,).

    This is the usual ``F.mse_loss`` convention, kept separate from the thesis's summed MSE
    (Example 2.2.2) because the two differ by a factor of the image size.
    """
    total = squared_error(pred, target)  # (B,), validates the pair
    return total / max(pred[0].numel(), 1)


def _bce_terms(z: Tensor, t: Tensor) -> Tensor:
    """−[t log σ(z) + (1 − t) log(1 − σ(z))] = softplus(z) − t·z, elementwise and stable.
    Written with softplus rather than ``F.binary_cross_entropy_with_logits`` (the same
    numbers and speed): under ``torch.func.vmap`` (fused training) that op has no batching
    rule and ran 4x slower."""
    return F.softplus(z) - t * z


def bce(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy of Example 2.2.2: the MEAN over pixels, per example, shape (B,).

    Takes the decoder's logits (f(ψ) = sigmoid(logits)) rather than probabilities, which
    keeps log f and log(1 − f) finite; targets must lie in [0, 1] (not checked, to avoid a
    device sync per call). For several channels the mean runs over all C·H·W values.
    """
    z, t = _per_example(logits, target, "bce")
    return _bce_terms(z, t).mean(dim=1)  # (B, n) -> (B,)


def bce_sum(logits: Tensor, target: Tensor) -> Tensor:
    """BCE summed over pixels = −log p(x | z) of a Bernoulli decoder (Example 2.2.2, §3.1).

    Takes logits like :func:`bce`; shape (B,), in nats.
    """
    z, t = _per_example(logits, target, "bce_sum")
    return _bce_terms(z, t).sum(dim=1)  # (B, n) -> (B,)


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "squared_error": squared_error,
    "linear_error": linear_error,
    "mse": mse,
    "mse_mean": mse_mean,
    "bce": bce,
    "bce_sum": bce_sum,
}
"""Per-example losses (Example 1.2.2, Example 2.2.2) by name."""

LOSS_TAKES_LOGITS: dict[str, bool] = {name: name in ("bce", "bce_sum") for name in LOSSES}
"""Whether a loss of :data:`LOSSES` takes logits (the BCEs of Example 2.2.2) or values."""


def get_loss(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    """The loss called ``name`` from :data:`LOSSES` (Example 1.2.2, Example 2.2.2)."""
    fn = LOSSES.get(name) if isinstance(name, str) else None
    if fn is None:
        raise ValueError(f"unknown loss {name!r}; known: {', '.join(LOSSES)}")
    return fn


def empirical_risk(
    loss: Callable[[Tensor, Tensor], Tensor] | str,
    f: Callable[[Tensor], Tensor],
    data: Tensor | tuple[Tensor, Tensor],
    batch_size: int = 1024,
) -> Tensor:
    """Empirical risk R_{L,D}(f) = (1/k) Σ_i L(x_i, y_i, f(x_i)) (Def 1.2.4, eq. 1.4).

    ``data`` is a tensor X (unsupervised, Def 2.2.1: the target is X itself) or a pair
    (X, Y). Evaluated in batches of ``batch_size`` and kept differentiable, so
    ``.backward()`` yields ∂_θ R = (1/k) Σ_i ∂_θ L(x_i, y_i, f_θ(x_i)) (Lemma 1.2.6).
    ``loss`` is a per-example loss (returning shape (B,)) or a name from :data:`LOSSES`.
    """
    loss_fn = get_loss(loss) if isinstance(loss, str) else loss
    if isinstance(data, Tensor):
        x, y = data, data
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        raise ValueError(f"data must be a tensor X or a pair (X, Y), got {type(data).__name__}")
    if not isinstance(x, Tensor) or not isinstance(y, Tensor) or x.dim() == 0 or y.dim() == 0:
        raise ValueError("data must hold tensors with a leading example dimension")
    k = x.shape[0]
    if k == 0 or y.shape[0] != k:
        raise ValueError(f"data needs k ≥ 1 inputs and as many targets, got {k} and {y.shape[0]}")
    if not is_count(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    total: Tensor | None = None
    for start in range(0, k, batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        per_example = loss_fn(f(xb), yb)  # (b,)
        if per_example.shape != (xb.shape[0],):
            raise ValueError(
                f"loss must return one value per example, shape ({xb.shape[0]},),"
                f" got {tuple(per_example.shape)}"
            )
        part = per_example.sum()
        total = part if total is None else total + part
    assert total is not None
    return total / k


# --- Information measures (Def 3.1.1–3.1.3) ------------------------------------------------
# Closed forms, written from the formulas; each returns a tensor of the batch shape.
# Bernoulli and Categorical work from logits (log-odds / normalised log-probabilities),
# which torch keeps finite even for probabilities 0 and 1.


def _kl_normal(p: Normal, q: Normal) -> Tensor:
    # log(σ_q/σ_p) + (σ_p² + (μ_p − μ_q)²) / (2σ_q²) − 1/2
    var_ratio = (p.scale / q.scale).square()
    mean_term = ((p.loc - q.loc) / q.scale).square()
    return 0.5 * (var_ratio + mean_term - 1.0 - var_ratio.log())


def _entropy_normal(p: Normal) -> Tensor:
    # ½ log(2πe σ²)
    return 0.5 + 0.5 * torch.log(2 * torch.pi * p.scale.square())


def _cross_entropy_normal(p: Normal, q: Normal) -> Tensor:
    # ½ log(2π σ_q²) + (σ_p² + (μ_p − μ_q)²) / (2σ_q²)
    spread = (p.scale.square() + (p.loc - q.loc).square()) / q.scale.square()
    return 0.5 * torch.log(2 * torch.pi * q.scale.square()) + 0.5 * spread


def _kl_bernoulli(p: Bernoulli, q: Bernoulli) -> Tensor:
    # a log(a/b) + (1−a) log((1−a)/(1−b)) = a (ℓ_a − ℓ_b) + softplus(ℓ_b) − softplus(ℓ_a)
    return p.probs * (p.logits - q.logits) + F.softplus(q.logits) - F.softplus(p.logits)


def _entropy_bernoulli(p: Bernoulli) -> Tensor:
    # −a log a − (1−a) log(1−a) = softplus(ℓ_a) − a ℓ_a
    return F.softplus(p.logits) - p.probs * p.logits


def _cross_entropy_bernoulli(p: Bernoulli, q: Bernoulli) -> Tensor:
    # −a log b − (1−a) log(1−b) = softplus(ℓ_b) − a ℓ_b
    return F.softplus(q.logits) - p.probs * q.logits


def _finite(log_p: Tensor) -> Tensor:
    """log-probabilities with −inf (a class of probability 0) raised to the lowest finite
    number, so that 0 · log 0 is 0 and not NaN."""
    return log_p.clamp_min(torch.finfo(log_p.dtype).min)


def _against(p: Categorical, q: Categorical, terms: Tensor) -> Tensor:
    """Σ_k of ``terms``, and +inf where p puts mass on a class q rules out."""
    impossible = ((p.probs > 0) & (q.probs == 0)).any(dim=-1)
    return torch.where(impossible, math.inf, terms.sum(dim=-1))


def _kl_categorical(p: Categorical, q: Categorical) -> Tensor:
    # Σ_k p_k (log p_k − log q_k)
    return _against(p, q, p.probs * (_finite(p.logits) - _finite(q.logits)))


def _entropy_categorical(p: Categorical) -> Tensor:
    # −Σ_k p_k log p_k
    return -(p.probs * _finite(p.logits)).sum(dim=-1)


def _cross_entropy_categorical(p: Categorical, q: Categorical) -> Tensor:
    # −Σ_k p_k log q_k
    return _against(p, q, -p.probs * _finite(q.logits))


def _sum_rightmost(x: Tensor, n: int) -> Tensor:
    return x.sum(dim=tuple(range(-n, 0))) if n > 0 else x


def _closed_pair(
    table: dict[tuple[type, type], Callable[..., Tensor]], p: Distribution, q: Distribution
) -> Tensor | None:
    """Look up (type(p), type(q)); Independent pairs sum the base measure (diagonal Gaussian)."""
    if isinstance(p, Independent) and isinstance(q, Independent):
        n = p.reinterpreted_batch_ndims
        if n != q.reinterpreted_batch_ndims:
            return None
        inner = _closed_pair(table, p.base_dist, q.base_dist)
        return None if inner is None else _sum_rightmost(inner, n)
    fn = table.get((type(p), type(q)))
    return None if fn is None else fn(p, q)


def _closed_single(table: dict[type, Callable[..., Tensor]], p: Distribution) -> Tensor | None:
    if isinstance(p, Independent):
        inner = _closed_single(table, p.base_dist)
        return None if inner is None else _sum_rightmost(inner, p.reinterpreted_batch_ndims)
    fn = table.get(type(p))
    return None if fn is None else fn(p)


KL_CLOSED_FORMS: dict[tuple[type, type], Callable[..., Tensor]] = {
    (Normal, Normal): _kl_normal,
    (Bernoulli, Bernoulli): _kl_bernoulli,
    (Categorical, Categorical): _kl_categorical,
}
ENTROPY_CLOSED_FORMS: dict[type, Callable[..., Tensor]] = {
    Normal: _entropy_normal,
    Bernoulli: _entropy_bernoulli,
    Categorical: _entropy_categorical,
}
CROSS_ENTROPY_CLOSED_FORMS: dict[tuple[type, type], Callable[..., Tensor]] = {
    (Normal, Normal): _cross_entropy_normal,
    (Bernoulli, Bernoulli): _cross_entropy_bernoulli,
    (Categorical, Categorical): _cross_entropy_categorical,
}


def _check_dist(*dists: Distribution) -> None:
    for d in dists:
        if not isinstance(d, Distribution):
            raise ValueError(f"expected a torch.distributions object, got {type(d).__name__}")
    if len(dists) == 2 and dists[0].event_shape != dists[1].event_shape:
        raise ValueError(
            f"p and q must share an event shape, got {tuple(dists[0].event_shape)}"
            f" and {tuple(dists[1].event_shape)}"
        )


def _draw(p: Distribution, n_samples: int | None) -> Tensor:
    """n samples x ~ p, reparameterised where p allows (so estimates stay differentiable)."""
    n = MC_SAMPLES if n_samples is None else n_samples
    if not is_count(n):
        raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
    shape = torch.Size((n,))
    return p.rsample(shape) if p.has_rsample else p.sample(shape)  # (n, *batch, *event)


def kl_divergence(p: Distribution, q: Distribution, n_samples: int | None = None) -> Tensor:
    """Kullback–Leibler divergence D_KL(p ‖ q) = ∫ p log(p/q) (Def 3.1.1, eq. 3.1).

    Closed form for Normal, Independent(Normal) (diagonal Gaussian), Bernoulli and
    Categorical pairs; otherwise, or when ``n_samples`` is given, the Monte Carlo estimate
    mean_j [log p(x_j) − log q(x_j)] with x_j ~ p (``n_samples`` defaults to 10 000).
    Returns a tensor of the batch shape.
    """
    _check_dist(p, q)
    if n_samples is None:
        exact = _closed_pair(KL_CLOSED_FORMS, p, q)
        if exact is not None:
            return exact
    x = _draw(p, n_samples)
    return (p.log_prob(x) - q.log_prob(x)).mean(dim=0)  # (n, *batch) -> batch


def entropy(p: Distribution, n_samples: int | None = None) -> Tensor:
    """Entropy H(p) = −∫ p log p = E_p[−log p(x)] (Def 3.1.2, eq. 3.2), in nats.

    Closed form for Normal, Independent(Normal), Bernoulli and Categorical; otherwise, or
    when ``n_samples`` is given, a Monte Carlo estimate (default 10 000 samples).
    """
    _check_dist(p)
    if n_samples is None:
        exact = _closed_single(ENTROPY_CLOSED_FORMS, p)
        if exact is not None:
            return exact
    x = _draw(p, n_samples)
    return -p.log_prob(x).mean(dim=0)  # (n, *batch) -> batch


def cross_entropy(p: Distribution, q: Distribution, n_samples: int | None = None) -> Tensor:
    """Cross-entropy H_q(p) = −∫ p log q = E_p[−log q(x)] (Def 3.1.3, eq. 3.3), in nats.

    Closed forms as for :func:`kl_divergence`; otherwise, or when ``n_samples`` is given,
    a Monte Carlo estimate (default 10 000 samples). D_KL(p ‖ q) = H_q(p) − H(p)
    (Remark 3.1.4).
    """
    _check_dist(p, q)
    if n_samples is None:
        exact = _closed_pair(CROSS_ENTROPY_CLOSED_FORMS, p, q)
        if exact is not None:
            return exact
    x = _draw(p, n_samples)
    return -q.log_prob(x).mean(dim=0)  # (n, *batch) -> batch


def kl_normal_std(mu: Tensor, logvar: Tensor) -> Tensor:
    """D_KL(N(μ, diag σ²) ‖ N(0, I)) per example, summed over latent dims (Def 3.1.1).

    The VAE's KL term: ½ Σ_j (μ_j² + σ_j² − 1 − log σ_j²) with logvar = log σ². Shape (B,).
    """
    if not isinstance(mu, Tensor) or not isinstance(logvar, Tensor):
        raise ValueError("kl_normal_std takes tensors mu and logvar")
    if mu.shape != logvar.shape or mu.dim() == 0:
        raise ValueError(
            f"mu and logvar must share a batched shape, got {tuple(mu.shape)}"
            f" and {tuple(logvar.shape)}"
        )
    terms = mu.square() + logvar.exp() - 1.0 - logvar  # (B, Z)
    return 0.5 * terms.reshape(mu.shape[0], -1).sum(dim=1)  # (B, Z) -> (B,)


# --------------------------------------------------------------------------------------
# Gaussian log densities (the VAE's prior and posterior, §3)
# --------------------------------------------------------------------------------------

_LOG_2PI = math.log(2 * math.pi)


def normal_log_prob(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; μ, diag exp(log σ²)) summed over the last dimension: (..., D) -> (...)."""
    return -0.5 * ((z - mu).square() * torch.exp(-logvar) + logvar + _LOG_2PI).sum(dim=-1)
