"""Decoder likelihoods p(x | z) of a VAE (§3): per-example log-probabilities in nats, and
the decoded image E[x | z], chosen by ``model.likelihood``. Decoders end in logits; each
likelihood reads them (and log σ where it has one)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.thesis.losses import bce_sum

_LOG_2PI = math.log(2 * math.pi)


def bernoulli_log_prob(logits: Tensor, x: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """log p(x | z) = Σ_i x_i log p_i + (1 − x_i) log(1 − p_i), p = sigmoid(logits); (B,).
    For grey values in [0, 1] this is the usual cross-entropy reconstruction term."""
    return -bce_sum(logits, x)


def _gaussian(mean: Tensor, x: Tensor, log_sigma: Tensor | None) -> Tensor:
    if log_sigma is None:
        raise ValueError("a gaussian likelihood needs log_sigma")
    z = (x - mean) * torch.exp(-log_sigma)  # standardised residuals (B, C, H, W)
    per_pixel = -0.5 * z.square() - log_sigma - 0.5 * _LOG_2PI
    return per_pixel.reshape(x.shape[0], -1).sum(dim=1)  # (B, C, H, W) -> (B,)


def gaussian_log_prob(logits: Tensor, x: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """log N(x; sigmoid(logits), σ² I) summed over pixels, with log σ given (fixed or
    learned, a scalar or one per pixel); (B,)."""
    return _gaussian(torch.sigmoid(logits), x, log_sigma)


def gaussian_identity_log_prob(
    logits: Tensor, x: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """log N(x; out, σ² I) with the decoder output itself as the mean: for real-valued data,
    and the linear-Gaussian VAE (probabilistic PCA) whose likelihood is known exactly; (B,)."""
    return _gaussian(logits, x, log_sigma)


_CB_SERIES = 0.1
"""Below this |logit| the continuous Bernoulli's normaliser and mean use their Taylor series
(errors O(ℓ⁶) and O(ℓ⁵), under 1e-9 here) instead of the closed forms, which cancel."""


def cb_log_normalizer(logits: Tensor) -> Tensor:
    """log C(λ) of the continuous Bernoulli, λ = sigmoid(ℓ): C = 2 artanh(1 − 2λ)/(1 − 2λ)
    = ℓ / tanh(ℓ/2), computed from ℓ so it stays exact where λ rounds to 0 or 1 (torch
    clamps λ to 1.2e-7 there, which is 0.6 nats off per pixel at ℓ = 30 and has no
    gradient). log 2 + ℓ²/12 − 7ℓ⁴/1440 near ℓ = 0."""
    a = logits.abs()
    small = a < _CB_SERIES
    a_big = torch.where(small, 1.0, a)  # keeps the unused branch finite (and its gradient)
    # log(a / tanh(a/2)), tanh(a/2) = −expm1(−a) / (1 + e^−a)
    closed = torch.log(a_big) - torch.log(-torch.expm1(-a_big)) + torch.log1p(torch.exp(-a_big))
    sq = torch.where(small, logits, 0.0).square()
    series = math.log(2) + sq / 12 - 7 * sq.square() / 1440
    return torch.where(small, series, closed)


def continuous_bernoulli_log_prob(
    logits: Tensor, x: Tensor, log_sigma: Tensor | None = None
) -> Tensor:
    """log CB(x; λ = sigmoid(logits)) summed over pixels (Loaiza-Ganem & Cunningham 2019):
    the Bernoulli term plus its normalising constant, a proper density on [0, 1]; (B,)."""
    per_pixel = x * logits - F.softplus(logits) + cb_log_normalizer(logits)
    return per_pixel.reshape(x.shape[0], -1).sum(dim=1)


def _cb_mean(logits: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    """E[x] = 1/(1 − e^−ℓ) − 1/ℓ of the continuous Bernoulli (the decoded image); ½ + ℓ/12
    − ℓ³/720 near ℓ = 0. Exact in the tails, where it goes to 0 and 1 as 1/|ℓ|."""
    small = logits.abs() < _CB_SERIES
    safe = torch.where(small, 1.0, logits)
    # 1/(1 − e^−ℓ): −1/expm1(−ℓ) for ℓ > 0; e^ℓ/expm1(ℓ) for ℓ < 0 (no overflow either way)
    pos = -1 / torch.expm1(-safe.clamp_min(_CB_SERIES))
    neg = torch.exp(safe.clamp_max(-_CB_SERIES)) / torch.expm1(safe.clamp_max(-_CB_SERIES))
    closed = torch.where(safe > 0, pos, neg) - 1 / safe
    t = torch.where(small, logits, 0.0)
    return torch.where(small, 0.5 + t / 12 - t**3 / 720, closed)


def _sigmoid_mean(logits: Tensor, log_sigma: Tensor | None = None) -> Tensor:
    return torch.sigmoid(logits)


def _bernoulli_log_prob_k(logits: Tensor, x: Tensor, k: int) -> Tensor:
    """log p(x_b | z_bj) for k decoder outputs per image, logits (B·k, …) against x (B, …),
    as (B, k), without repeating x k times. Binary x (the likelihood evaluation's case):
    Σ log σ(s·ℓ) with s = 2x − 1, one pass over the logits instead of softplus, product and
    difference; grey values: Σ x·ℓ as a batched matrix product, minus Σ softplus(ℓ)."""
    b = x.shape[0]
    # in x's precision, as log_prob (the models widen first; a direct call with bf16 logits
    # would otherwise sum 784 pixels in bf16: 1-2 nats off)
    dtype = torch.promote_types(logits.dtype, x.dtype)
    dtype = dtype if dtype.is_floating_point else torch.get_default_dtype()
    t = x.reshape(b, 1, -1).to(dtype)  # (B, 1, D)
    ell = logits.reshape(b, k, -1).to(dtype)  # (B·k, …) -> (B, k, D)
    # a traced graph (torch.compile) takes the general form, exact for binary x too: the
    # check reads a value, which would break the graph at every step
    if not torch.compiler.is_compiling() and bool(((t == 0) | (t == 1)).all()):
        return F.logsigmoid(ell * (2 * t - 1)).sum(dim=2)  # (B, k, D) -> (B, k)
    with torch.autocast(ell.device.type, enabled=False):  # bmm would run in bf16
        xl = torch.bmm(ell, t.transpose(1, 2)).squeeze(2)  # Σ x·ℓ, (B, k)
    return xl - F.softplus(ell).sum(dim=2)


LOG_PROB_K: dict[str, Callable[[Tensor, Tensor, int], Tensor]] = {
    "bernoulli": _bernoulli_log_prob_k,
}
"""Likelihoods with their own k-draws-per-image form (the others repeat x k times)."""


# name -> (log p(x | z) per example, the decoded image E[x | z] in [0, 1])
LIKELIHOODS: dict[str, tuple[Callable[..., Tensor], Callable[..., Tensor]]] = {
    "bernoulli": (bernoulli_log_prob, _sigmoid_mean),
    "gaussian": (gaussian_log_prob, _sigmoid_mean),
    "continuous_bernoulli": (continuous_bernoulli_log_prob, _cb_mean),
    "gaussian_identity": (gaussian_identity_log_prob, lambda out, log_sigma=None: out),
}


@dataclass(frozen=True)
class Likelihood:
    """A decoder likelihood as one object: ``log_prob(logits, x, log_sigma)`` per example
    (B,), ``mean(logits, log_sigma)`` the decoded image (both looked up in
    :data:`LIKELIHOODS` by name), whether it reads σ, and whether it is a distribution over
    discrete pixels (so that bits/dim of binary images exist)."""

    name: str
    takes_sigma: bool = False
    discrete: bool = False

    @property
    def log_prob(self) -> Callable[..., Tensor]:
        return LIKELIHOODS[self.name][0]

    @property
    def mean(self) -> Callable[..., Tensor]:
        return LIKELIHOODS[self.name][1]

    def log_prob_k(self, logits: Tensor, x: Tensor, k: int, log_sigma: Tensor | None = None):
        """log p(x_b | z_bj) for k decoder outputs per image: ``logits`` (B·k, …) are image
        b's draws j = 0 … k−1 in order, ``x`` is (B, …); returns (B, k)."""
        b = x.shape[0]
        if self.name in LOG_PROB_K:
            return LOG_PROB_K[self.name](logits, x, k)
        xk = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
        return self.log_prob(logits, xk, log_sigma).reshape(b, k)


SIGMA_LIKELIHOODS = ("gaussian", "gaussian_identity")
"""The likelihoods that read model.sigma and model.learn_sigma."""

_OBJECTS = {name: Likelihood(name, name in SIGMA_LIKELIHOODS, name == "bernoulli")
            for name in LIKELIHOODS}  # fmt: skip


def likelihood(name: str) -> Likelihood:
    """The :class:`Likelihood` called ``name``; an unknown name is a ConfigError."""
    if name not in _OBJECTS:
        raise ConfigError(f"unknown likelihood {name!r} (known: {', '.join(LIKELIHOODS)})")
    return _OBJECTS[name]
