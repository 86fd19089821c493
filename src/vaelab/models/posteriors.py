"""Approximate posteriors q(z | x): what the encoder's output means. A posterior module
turns the encoder's output into a distribution object that draws reparameterised samples
together with their log density."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaelab.thesis.losses import normal_log_prob


class DiagonalGaussian(NamedTuple):
    """q(z | x) = N(μ, diag σ²), from (μ, log σ²) of shape (B, Z) each; unpacks as a pair."""

    mu: Tensor
    logvar: Tensor

    @property
    def mean(self) -> Tensor:
        return self.mu

    def rsample(self) -> Tensor:
        """One reparameterised draw z = μ + σ·ε, (B, Z)."""
        return self.mu + torch.exp(0.5 * self.logvar) * torch.randn_like(self.mu)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z | x) of codes z (B, Z) -> (B,)."""
        return normal_log_prob(z, self.mu, self.logvar)

    def rsample_k(self, k: int) -> tuple[Tensor, Tensor]:
        """k draws per example and their log q(z | x): (B, k, Z) and (B, k)."""
        mu, logvar = self.mu, self.logvar
        b, zdim = mu.shape
        eps = torch.randn(b, k, zdim, device=mu.device, dtype=mu.dtype)  # (B, k, Z)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B, k, Z)
        zero = z.new_zeros(())
        # log q(z | x) = log N(ε; 0, I) − ½ Σ log σ², from ε itself: z − μ loses ε's digits
        # when σ ≪ |μ| (0.24 nats at log σ² = −24, μ = 3, Z = 32 in float32); same gradients
        log_q = normal_log_prob(eps, zero, zero) - 0.5 * logvar.sum(-1, keepdim=True)  # (B, k)
        return z, log_q


class GaussianPosterior(nn.Module):
    """The encoder gives (μ, log σ²) side by side, (B, 2Z) -> :class:`DiagonalGaussian`."""

    outputs_per_dim = 2

    def __init__(self, options=None, dim: int | None = None):
        super().__init__()

    def forward(self, h: Tensor) -> DiagonalGaussian:
        mu, logvar = h.chunk(2, dim=1)  # (B, 2Z) -> 2 x (B, Z)
        return DiagonalGaussian(mu, logvar)


POSTERIORS: dict[str, type[nn.Module]] = {"gaussian": GaussianPosterior}
"""[model.posterior] kind -> the posterior module a VAE is built with, called with the
table's options and the latent dimension; ``outputs_per_dim`` encoder outputs per latent
dimension. :mod:`vaelab.models.flows` adds "iaf"."""
