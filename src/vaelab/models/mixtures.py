"""Learned mixture priors for the VAE: a mixture of K Gaussians (``[model.prior] kind =
"mog"``) and the VampPrior (Tomczak & Welling 2018, ``kind = "vamp"``), the mixture of the
posteriors q(z | u_k) of K learned pseudo-inputs u_k.

Both are

    p(z) = Σ_k π_k N(z; μ_k, diag σ_k²),

so they share one log density (log-sum-exp over components) and one sampler; they differ
only in where (μ_k, log σ_k², log π_k) come from. Neither has a closed-form KL with a
Gaussian posterior: the VAE estimates it by one sample, log q(z | x) − log p(z). Their
parameters are the model's own (in ``model.safetensors``), trained with it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.config import register_part
from vaelab.device import wide_float
from vaelab.errors import ConfigError
from vaelab.models.priors import PRIORS, Prior, draw_components

LOG_2PI = math.log(2 * math.pi)


@dataclass
class MixtureOptions:
    kind: str = "mog"
    components: int = 10
    """the number of Gaussian components K (means, variances and weights are learned)"""


@dataclass
class VampOptions:
    kind: str = "vamp"
    components: int = 500
    """the number of learned pseudo-inputs K (Tomczak & Welling 2018: 500 on MNIST)"""


class GaussianMixture(Prior):
    """p(z) = Σ_k π_k N(z; μ_k, diag σ_k²); a subclass gives :meth:`mixture`."""

    title = "mixture prior's"

    def mixture(self) -> tuple[Tensor, Tensor, Tensor]:
        """(μ (K, Z), log σ² (K, Z), log π (K,))."""
        raise NotImplementedError

    def log_prob(self, z: Tensor) -> Tensor:
        """log Σ_k π_k N(z; μ_k, σ_k²). The squared distances Σ_j (z_j − μ_kj)²/σ_kj² are
        expanded into matmuls, z²·(1/σ²)ᵀ − 2z·(μ/σ²)ᵀ + Σ μ²/σ², in float64 (where the
        device has it) against the cancellation: 14 ms -> 1 ms per step for 100 codes and
        500 components on one core, instead of a (B, K, Z) tensor per operation."""
        mu, logvar, log_pi = self.mixture()
        wide = wide_float(z.device)
        with torch.autocast(z.device.type, enabled=False):
            zf = z.reshape(-1, z.shape[-1]).to(wide)  # (…, Z) -> (N, Z)
            mu, logvar = mu.to(wide), logvar.to(wide)
            prec = torch.exp(-logvar)  # (K, Z)
            quad = (zf.square() @ prec.T - 2 * zf @ (mu * prec).T  # (N, Z) @ (Z, K) -> (N, K)
                    + (mu.square() * prec).sum(-1))  # fmt: skip
            per = -0.5 * (quad + logvar.sum(-1) + mu.shape[1] * LOG_2PI)  # (N, K)
            out = torch.logsumexp(per + log_pi.to(wide), dim=-1)  # (N, K) -> (N,)
        return out.reshape(z.shape[:-1]).to(z.dtype)  # (…)

    def sample(self, n, generator=None, temperature=1.0) -> Tensor:
        """A component k ~ π per draw, then z = μ_k + T·σ_k·ε."""
        mu, logvar, log_pi = (t.detach() for t in self.mixture())
        k, eps = draw_components(log_pi, n, mu.shape[1], generator)  # (n,), (n, Z)
        return mu[k] + temperature * torch.exp(0.5 * logvar[k]) * eps  # (n, Z)


class MixturePrior(GaussianMixture):
    """K Gaussians with learned means, log-variances and mixture logits. The means start as
    draws of N(0, I) (seeded by the model's initialisation), the variances at 1, the
    weights equal."""

    def __init__(self, dim: int, options: MixtureOptions):
        super().__init__()
        if options.components < 1:
            raise ConfigError(f"model.prior.components must be >= 1, got {options.components}")
        self.dim, k = dim, options.components
        self.means = nn.Parameter(torch.randn(k, dim))  # (K, Z)
        self.logvars = nn.Parameter(torch.zeros(k, dim))  # (K, Z)
        self.logits = nn.Parameter(torch.zeros(k))  # (K,)

    def mixture(self):
        return self.means, self.logvars, self.logits.log_softmax(0)


class VampPrior(GaussianMixture):
    """p(z) = (1/K) Σ_k q(z | u_k): the model's own posterior at K learned pseudo-inputs
    u_k (images in [0, 1] through a hardtanh, initialised near 0.05 as in the paper). It
    needs the model's encoder: :meth:`bind` is called by the VAE that owns it.

    The pass over the pseudo-inputs runs in fp32 under bf16 autocast, so that the mixture's
    means are not bf16-rounded (docs/families.md: the VampPrior's slow start)."""

    title = "VampPrior's"

    def __init__(self, dim: int, options: VampOptions):
        super().__init__()
        if options.components < 1:
            raise ConfigError(f"model.prior.components must be >= 1, got {options.components}")
        self.dim, self.components = dim, options.components
        self.pseudo: nn.Parameter | None = None
        self._posterior = None
        self._held: dict | None = None  # autocast on/off -> mixture, inside held()

    def bind(self, model, image_shape: tuple[int, ...]) -> None:
        """Take ``model.posterior`` as q and create the pseudo-inputs (K, C, H, W)."""
        if model.conditional:
            raise ConfigError('model.prior.kind = "vamp" needs an unconditional VAE: its '
                              "pseudo-inputs carry no label (model.conditional = false)")  # fmt: skip
        if len(image_shape) != 3:
            raise ConfigError("the VampPrior needs the image shape (C, H, W)")
        self.pseudo = nn.Parameter(0.05 + 0.01 * torch.randn(self.components, *image_shape))
        object.__setattr__(self, "_posterior", model.posterior)  # not a sub-module: no cycle

    def pseudo_inputs(self) -> Tensor:
        """The pseudo-inputs as images in [0, 1], (K, C, H, W)."""
        return F.hardtanh(self.pseudo, 0.0, 1.0)

    def mixture(self):
        """Inside :meth:`held` and without autograd (an evaluation) the encoder's pass over
        the K pseudo-inputs is made once: an evaluation asks for the mixture once per chunk
        of draws, and K = 500 pseudo-inputs cost five batches of encoder work each time."""
        if self._posterior is None:
            raise ConfigError("this VampPrior is not bound to a model")
        if self._held is None or torch.is_grad_enabled():
            return self._mixture()
        key = _autocast_on(self.pseudo.device.type)
        if key not in self._held:
            self._held[key] = self._mixture()
        return self._held[key]

    def _mixture(self):
        with torch.autocast(self.pseudo.device.type, enabled=False):  # see the class's docs
            q = self._posterior(self.pseudo_inputs())  # (K, C, H, W) -> q with (K, Z) each
        log_pi = torch.full((self.components,), -math.log(self.components), device=q.mu.device)
        return q.mu, q.logvar, log_pi

    @contextmanager
    def held(self) -> Iterator[None]:
        """A block in which the weights do not change (``vaelab.eval.common.evaluating``
        enters it): the mixture is computed once in it. Optimizer steps cannot be seen from
        here (torch's fused Adam does not advance tensors' version counters), so the block,
        not a check of the weights, says when the kept mixture is valid."""
        object.__setattr__(self, "_held", {})
        try:
            yield
        finally:
            object.__setattr__(self, "_held", None)


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)  # torch >= 2.4
    except TypeError:
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


register_part("prior", "mog", MixtureOptions)
register_part("prior", "vamp", VampOptions)
PRIORS["mog"] = MixturePrior
PRIORS["vamp"] = VampPrior
