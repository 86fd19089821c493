"""The inverse autoregressive flow posterior (Kingma et al. 2016), ``[model.posterior]
kind = "iaf"``: the diagonal Gaussian draw z₀ = μ + σ·ε is pushed through ``flows``
autoregressive steps

    [m, s] = MADE_t(z_{t−1}, h),  g = sigmoid(s + 2),  z_t = g ⊙ z_{t−1} + (1 − g) ⊙ m,

each reversing the order of the dimensions before it, so that

    log q(z_T | x) = log N(z₀; μ, σ²) − Σ_t Σ_i log g_t,i

(the Jacobian of every step is triangular with diagonal g). The encoder gives (μ, log σ², h)
side by side; h (one context value per latent dimension) enters every MADE's hidden layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import register_part
from vaelab.errors import ConfigError
from vaelab.models.posteriors import POSTERIORS, DiagonalGaussian


@dataclass
class IAFOptions:
    kind: str = "iaf"
    flows: int = 2
    """autoregressive steps after the diagonal Gaussian"""
    hidden: int = 320
    """hidden units of each step's MADE (two masked layers; Kingma et al.: 320 on MNIST)"""


class MaskedLinear(nn.Linear):
    """A linear map whose weight is multiplied by a fixed 0/1 mask (out, in)."""

    def __init__(self, n_in: int, n_out: int, mask: Tensor):
        super().__init__(n_in, n_out)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    """Outputs m_i, s_i that depend on z_1 … z_{i−1} only (and on the context h): hidden unit
    j has degree d_j in 1 … Z−1 and sees inputs of degree ≤ d_j; output i sees hidden units
    of degree < i (Germain et al. 2015)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        degrees_in = torch.arange(1, dim + 1)  # (Z,)
        degrees_h = torch.arange(hidden) % max(dim - 1, 1) + 1  # (H,) in 1 … Z−1
        self.inp = MaskedLinear(dim, hidden, (degrees_h[:, None] >= degrees_in[None]).float())
        self.ctx = nn.Linear(dim, hidden)  # the context h, unmasked
        self.mid = MaskedLinear(hidden, hidden, (degrees_h[:, None] >= degrees_h[None]).float())
        out_mask = (degrees_in[:, None] > degrees_h[None]).float()  # (Z, H)
        self.out = MaskedLinear(hidden, 2 * dim, torch.cat([out_mask, out_mask]))

    def forward(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        a = F.elu(self.inp(z) + self.ctx(h))  # (…, Z) -> (…, H)
        a = F.elu(self.mid(a))
        m, s = self.out(a).chunk(2, dim=-1)  # (…, 2Z) -> 2 x (…, Z)
        return m, s


class IAFDistribution:
    """q(z | x) of one batch: the base Gaussian, the context and the flow."""

    def __init__(self, base: DiagonalGaussian, h: Tensor, steps: nn.ModuleList):
        self.base, self.h, self.steps = base, h, steps
        self._last: tuple[Tensor, Tensor] | None = None

    def flow(self, z: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """z₀ (…, Z) -> (z_T, Σ log g) (…, Z), (…)."""
        logdet = z.new_zeros(z.shape[:-1])
        for step in self.steps:
            m, s = step(z, h)
            g = torch.sigmoid(s + 2.0)  # starts near the identity (g ≈ 0.88)
            z = (g * z + (1 - g) * m).flip(-1)  # the next step sees the reversed order
            logdet = logdet + F.logsigmoid(s + 2.0).sum(-1)
        return z, logdet

    @property
    def mean(self) -> Tensor:
        """The flow applied to μ (the code of ε = 0), (B, Z)."""
        return self.flow(self.base.mu, self.h)[0]

    def rsample(self) -> Tensor:
        """One draw z_T per example (B, Z); its log q is kept for :meth:`log_prob`."""
        z0 = self.base.rsample()  # (B, Z)
        z, logdet = self.flow(z0, self.h)
        self._last = (z, self.base.log_prob(z0) - logdet)
        return z

    def log_prob(self, z: Tensor) -> Tensor:
        """log q of the draw :meth:`rsample` just made (the flow is not inverted for others)."""
        if self._last is None or z is not self._last[0]:
            raise NotImplementedError("the IAF posterior's density is known for its own draws")
        return self._last[1]

    def rsample_k(self, k: int) -> tuple[Tensor, Tensor]:
        """k draws per example and their log q(z | x): (B, k, Z) and (B, k)."""
        z0, log_q0 = self.base.rsample_k(k)  # (B, k, Z), (B, k)
        h = self.h.unsqueeze(1).expand_as(z0)  # (B, Z) -> (B, k, Z)
        z, logdet = self.flow(z0, h)
        return z, log_q0 - logdet


class IAFPosterior(nn.Module):
    """The encoder gives (μ, log σ², h), (B, 3Z) -> :class:`IAFDistribution`."""

    outputs_per_dim = 3

    def __init__(self, options: IAFOptions, dim: int):
        super().__init__()
        if options.flows < 1 or options.hidden < 1:
            raise ConfigError("model.posterior.flows and .hidden must be >= 1")
        self.steps = nn.ModuleList(MADE(dim, options.hidden) for _ in range(options.flows))

    def forward(self, out: Tensor) -> IAFDistribution:
        mu, logvar, h = out.chunk(3, dim=1)  # (B, 3Z) -> 3 x (B, Z)
        return IAFDistribution(DiagonalGaussian(mu, logvar), h, self.steps)


register_part("posterior", "iaf", IAFOptions)
POSTERIORS["iaf"] = IAFPosterior
