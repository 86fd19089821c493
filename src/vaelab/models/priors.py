"""Priors p(z) over latent codes, one object each, shared by every family that has one.

A prior answers ``log_prob(z)`` ((…, Z) -> (…)), ``sample(n, generator, temperature)``
((n, Z); temperature T scales the draw's spread, 1 = the prior itself), optionally a
closed-form ``kl(posterior)`` (None when it has none: the caller estimates it by Monte
Carlo) and ``from_standard(u)``, the map of standard-normal codes onto the prior (for
quantile grids; None where no such map exists). Priors hold no persistent state of their
own in ``model.safetensors``: a learned prior's parameters would, an ex-post fit is a
stage file (:mod:`vaelab.models.stages`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.models.posteriors import DiagonalGaussian
from vaelab.thesis.losses import kl_normal_std, normal_log_prob


class Prior(nn.Module):
    """The interface of a prior p(z) (see the module's docstring)."""

    dim: int
    title = "prior"
    """How figures name it ("decoded prior quantiles")."""

    def log_prob(self, z: Tensor) -> Tensor:
        raise NotImplementedError

    def sample(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        raise NotImplementedError

    def kl(self, posterior) -> Tensor | None:
        """KL(q ‖ p) per example in closed form, or None (then it is estimated)."""
        return None

    def from_standard(self, u: Tensor) -> Tensor | None:
        """Codes (N, Z) of standard-normal points u (N, Z), or None where there is no map."""
        return None

    def bind(self, model, image_shape: tuple[int, ...]) -> None:
        """Called once by the model that owns the prior (the VampPrior takes its encoder)."""


def draw_components(
    log_weights: Tensor, n: int, dim: int, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """For sampling a mixture: n component indices k ~ π (from log π (K,)) and n standard
    normal draws (n, Z), both on log π's device."""
    k = torch.multinomial(log_weights.detach().softmax(0).cpu(), n, replacement=True,
                          generator=generator)  # fmt: skip
    eps = torch.randn(n, dim, generator=generator)
    return k.to(log_weights.device), eps.to(log_weights.device)


class NormalPrior(Prior):
    """p(z) = N(0, I) in ``dim`` dimensions, the VAE's prior (§3)."""

    def __init__(self, dim: int, options=None):
        super().__init__()
        self.dim = dim
        self.register_buffer("anchor", torch.zeros(()), persistent=False)  # its device

    def log_prob(self, z: Tensor) -> Tensor:
        zero = z.new_zeros(())
        return normal_log_prob(z, zero, zero)  # (…, Z) -> (…)

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        return temperature * torch.randn(n, self.dim, generator=generator).to(self.anchor.device)

    def kl(self, posterior) -> Tensor | None:
        if isinstance(posterior, DiagonalGaussian):
            return kl_normal_std(posterior.mu, posterior.logvar)  # Def 3.1.1, (B,)
        return None

    def from_standard(self, u: Tensor) -> Tensor:
        return u


class GaussianPrior(Prior):
    """N(mean, L Lᵀ) with a full covariance given by its Cholesky factor L: the Gaussian an
    autoencoder's codes are fitted to after training ("AE + Gaussian")."""

    title = "fitted Gaussian's"

    def __init__(self, mean: Tensor, scale_tril: Tensor):
        super().__init__()
        self.dim = mean.shape[0]
        self.register_buffer("mean", mean, persistent=False)  # (Z,)
        self.register_buffer("scale_tril", scale_tril, persistent=False)  # (Z, Z)

    def log_prob(self, z: Tensor) -> Tensor:
        dist = torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril)
        return dist.log_prob(z)

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        eps = temperature * torch.randn(n, self.dim, generator=generator).to(self.mean.device)
        return self.from_standard(eps)

    def from_standard(self, u: Tensor) -> Tensor:
        return self.mean + u @ self.scale_tril.T  # (N, Z)


class FactorizedPrior(Prior):
    """Independent codes, each from a torch distribution family with an inverse CDF
    (Laplace, Normal, Cauchy, …) whose parameters, one per dimension, are given as tensors
    (Z,): ``FactorizedPrior(Laplace, loc=…, scale=…)``. Draws are quantiles of seeded
    uniforms; temperature T takes the quantile 0.5 + T·(u − 0.5), narrowing to the median."""

    def __init__(self, family: type[torch.distributions.Distribution], **params: Tensor):
        super().__init__()
        self.family, self.names = family, list(params)
        for key, value in params.items():
            self.register_buffer(key, value, persistent=False)
        self.dim = self.dist().batch_shape[-1]

    def dist(self) -> torch.distributions.Distribution:
        return self.family(**{key: getattr(self, key) for key in self.names})

    def log_prob(self, z: Tensor) -> Tensor:
        return self.dist().log_prob(z).sum(-1)  # (…, Z) -> (…)

    def quantile(self, p: Tensor) -> Tensor:
        tiny = torch.finfo(p.dtype).eps
        return self.dist().icdf(p.clamp(tiny, 1 - tiny))

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        u = torch.rand(n, self.dim, generator=generator).to(getattr(self, self.names[0]).device)
        return self.quantile(0.5 + temperature * (u - 0.5))  # (n, Z)

    def from_standard(self, u: Tensor) -> Tensor:
        return self.quantile(torch.special.ndtr(u))


PRIORS: dict[str, type[Prior]] = {"normal": NormalPrior}
"""[model.prior] kind -> the prior a VAE is built with, called as (latent dimension, the
table's options); :mod:`vaelab.models.mixtures` adds "mog" and "vamp"."""
