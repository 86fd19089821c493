"""A VAE with two stochastic layers (Burda et al. 2015, §5: 784-200-200-z₁(100)-100-100-z₂(50),
tanh), ``model.kind = "vae2"``.

Generative model: z₂ ~ N(0, I), z₁ | z₂ ~ N(μ(z₂), diag σ²(z₂)), x | z₁ from the decoder
likelihood. Inference network (bottom-up): q(z₁ | x) then q(z₂ | z₁), each a diagonal
Gaussian. One importance weight is

    log w = log p(x | z₁) + log p(z₁ | z₂) + log p(z₂) − log q(z₁ | x) − log q(z₂ | z₁),

so the ELBO (k = 1), the IWAE bound (k > 1) and the importance-sampled NLL of
:func:`~vaelab.eval.likelihood.log_likelihood` all come from :meth:`TwoLayerVAE.log_weights`
(the proposal is the whole inference network). ``encode``/``decode`` work on the top
layer z₂ (its posterior mean; decoding takes the mean of z₁ | z₂), so reconstructions,
plots and the explorer see the top layer; ``sample`` draws z₁ ancestrally.

Keys: ``widths``/``bottleneck`` are the bottom layer's (200, 200 → z₁ = 100),
``top_widths``/``top_bottleneck`` the top layer's (100, 100 → z₂ = 50); ``k``;
``likelihood``; ``ladder`` (top-down inference, Sønderby et al. 2016: q(z₂ | x) from the
bottom-up pass, then q(z₁ | z₂, x), the precision-weighted product of the bottom-up
Gaussian and p(z₁ | z₂)); ``warmup`` (Sønderby et al.'s KL warm-up: in training, the latent
part log p(z₁, z₂) − log q(z₁, z₂ | x) of every log weight is weighed by min(1, epoch/warmup),
so k = 1 trains on reconstruction + β·KL and k > 1 on the IWAE bound of those weights; the
per-epoch test loss and every evaluation use the full bound).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vaelab.errors import ConfigError
from vaelab.models.base import LatentModel, widened
from vaelab.models.likelihoods import likelihood
from vaelab.models.posteriors import DiagonalGaussian
from vaelab.models.priors import NormalPrior
from vaelab.thesis.losses import normal_log_prob
from vaelab.thesis.nn import decoder_mlp, encoder_mlp


def _gaussian(h: Tensor) -> DiagonalGaussian:
    mu, logvar = h.chunk(2, dim=-1)  # (…, 2Z) -> 2 x (…, Z)
    return DiagonalGaussian(mu, logvar)


class TwoLayerVAE(LatentModel):
    """Two stochastic layers z₁ (bottom) and z₂ (top); see the module docstring."""

    def __init__(self, image_shape, widths, z1: int, top_widths, z2: int, activation: str,
                 likelihood_name: str = "bernoulli", k: int = 1, ladder: bool = False,
                 warmup: int = 0):  # fmt: skip
        super().__init__()
        c, h, w = image_shape
        d = c * h * w
        try:
            self.q1 = encoder_mlp([d, *widths, 2 * z1], activation)  # x -> (μ₁, log σ₁²)
            self.q2 = encoder_mlp([z1, *top_widths, 2 * z2], activation)  # z₁ -> (μ₂, log σ₂²)
            self.p1 = decoder_mlp([z2, *reversed(top_widths), 2 * z1], activation)  # z₂ -> z₁
            self.px = decoder_mlp([z1, *reversed(widths), d], activation)  # z₁ -> logits of x
        except ValueError as e:
            raise ConfigError(f"model.widths / model.top_widths: {e}") from e
        if k < 1:
            raise ConfigError(f"the number of importance samples k must be >= 1, got {k}")
        self.image_shape, self.k, self.likelihood = tuple(image_shape), k, likelihood_name
        self.ladder = ladder
        self.warmup, self.beta = warmup, 1.0  # β: the warm-up's weight of the latent part
        self.latent_dim, self.z1 = z2, z1
        self.prior = NormalPrior(z2)
        self.register_buffer("log_sigma", torch.tensor(math.log(0.1)))
        self.init_conditions(None)

    @property
    def discrete_likelihood(self) -> bool:
        return likelihood(self.likelihood).discrete

    # ---- the verbs
    def posterior(self, x: Tensor, c: Tensor | None = None) -> DiagonalGaussian:
        """q(z₁ | x), (B, Z₁) each; q(z₂ | z₁) follows from each draw of z₁."""
        return _gaussian(widened(self.q1(x.flatten(1))))  # (B, D) -> (B, 2·Z₁)

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """The top layer's code: the mean of q(z₂ | z₁ = the mean of q(z₁ | x)) (with the
        ladder: of q(z₂ | x), the same network on the bottom-up mean), (B, Z₂)."""
        return _gaussian(widened(self.q2(self.posterior(x).mu))).mu

    def reconstruct(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """E[x | z₁ = the mean of q(z₁ | x)]: through the bottom layer, which holds what the
        top one drops (decode(encode(x)) goes through z₂ and p(z₁ | z₂)), (B, C, H, W)."""
        return self._mean_x(self.posterior(x).mu)

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        """E[x | z₁ = the mean of p(z₁ | z₂ = z)] in [0, 1], (B, C, H, W)."""
        z1 = _gaussian(self.p1(z)).mu  # (B, Z₂) -> (B, Z₁)
        return self._mean_x(z1)

    def _mean_x(self, z1: Tensor) -> Tensor:
        logits = self.px(z1).reshape(-1, *self.image_shape)  # (B, Z₁) -> (B, C, H, W)
        return likelihood(self.likelihood).mean(logits, self.log_sigma)

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, temperature: float = 1.0) -> Tensor:
        """Ancestral draws: z₂ from the prior, z₁ ~ p(z₁ | z₂), then E[x | z₁]; (n, C, H, W)."""
        if labels is not None:
            raise ConfigError("a two-layer VAE is not conditional: it cannot generate by label")
        z2 = self.prior.sample(n, generator, temperature)  # (n, Z₂)
        p = _gaussian(self.p1(z2))
        eps = (
            torch.randn(p.mu.shape, generator=generator).to(p.mu.device) * temperature
        )  # CPU draws
        return self._mean_x(p.mu + torch.exp(0.5 * p.logvar) * eps)

    # ---- the objectives, per example in nats
    def log_weights(self, x: Tensor, k: int, posterior=None, c: Tensor | None = None) -> Tensor:
        """log w for k draws (z₁, z₂) of the inference network per image, (B, k)."""
        log_px, log_latent, _ = self._log_parts(x, k, posterior)
        return log_px + log_latent

    def _log_parts(self, x: Tensor, k: int, posterior=None) -> tuple[Tensor, Tensor, Tensor]:
        """(log p(x | z₁), log p(z₁ | z₂) + log p(z₂) − log q(z₁ | x) − log q(z₂ | z₁), and the
        top layer's log q(z₂ | z₁) − log p(z₂)) for k draws per image, each (B, k) (with the
        ladder: q(z₂ | x) and q(z₁ | z₂, x))."""
        if self.ladder:
            return self._ladder_parts(x, k, posterior)
        q1 = self.posterior(x) if posterior is None else posterior
        z1, log_q1 = q1.rsample_k(k)  # (B, k, Z₁), (B, k)
        b = z1.shape[0]
        flat1 = z1.reshape(b * k, -1)  # (B·k, Z₁)
        z2, log_q2 = _gaussian(widened(self.q2(flat1))).rsample_k(1)  # (B·k, 1, Z₂), (B·k, 1)
        z2 = z2.squeeze(1)  # (B·k, Z₂)
        p1 = _gaussian(widened(self.p1(z2)))  # p(z₁ | z₂), (B·k, Z₁) each
        log_p2 = self.prior.log_prob(z2)  # (B·k,)
        log_px, log_p = self._generative(x, k, flat1, p1, log_p2)
        log_latent = (log_p - log_q2.squeeze(1)).reshape(b, k) - log_q1
        top = (log_q2.squeeze(1) - log_p2).reshape(b, k)
        return log_px.reshape(b, k), log_latent, top

    def _generative(
        self, x: Tensor, k: int, z1: Tensor, p1, log_p2: Tensor
    ) -> tuple[Tensor, Tensor]:
        """(log p(x | z₁), log p(z₁ | z₂) + log p(z₂)) of draws z₁ (B·k, Z₁) for images x
        (B, C, H, W) repeated k times, each (B·k,); ``p1`` = p(z₁ | z₂), ``log_p2`` = log p(z₂)."""
        log_p = normal_log_prob(z1, p1.mu, p1.logvar) + log_p2  # (B·k,)
        b = x.shape[0]
        logits = widened(self.px(z1)).reshape(b * k, *self.image_shape)
        log_px = likelihood(self.likelihood).log_prob_k(logits, x, k, self.log_sigma)  # (B, k)
        return log_px.reshape(b * k), log_p

    def _ladder_parts(self, x: Tensor, k: int, posterior=None) -> tuple[Tensor, Tensor, Tensor]:
        """Top-down inference (Sønderby et al. 2016): the bottom-up pass gives (μ̂₁, σ̂₁²) and,
        from μ̂₁, q(z₂ | x); z₂ is drawn first, then z₁ from q(z₁ | z₂, x), the precision-weighted
        combination of the bottom-up Gaussian with the generative p(z₁ | z₂)."""
        up = self.posterior(x) if posterior is None else posterior  # (B, Z₁) each
        b = up.mu.shape[0]
        z2, log_q2 = _gaussian(widened(self.q2(up.mu))).rsample_k(k)  # (B, k, Z₂), (B, k)
        flat2 = z2.reshape(b * k, -1)  # (B·k, Z₂)
        p1 = _gaussian(widened(self.p1(flat2)))  # p(z₁ | z₂), (B·k, Z₁) each
        rep = lambda t: t.repeat_interleave(k, dim=0)  # noqa: E731  (B, Z₁) -> (B·k, Z₁)
        q1 = precision_weighted(DiagonalGaussian(rep(up.mu), rep(up.logvar)), p1)
        z1, log_q1 = q1.rsample_k(1)  # (B·k, 1, Z₁), (B·k, 1)
        log_p2 = self.prior.log_prob(flat2)  # (B·k,)
        log_px, log_p = self._generative(x, k, z1.squeeze(1), p1, log_p2)
        log_latent = (log_p - log_q1.squeeze(1)).reshape(b, k) - log_q2
        top = log_q2 - log_p2.reshape(b, k)
        return log_px.reshape(b, k), log_latent, top

    def elbo(self, x: Tensor, beta: float = 1.0, c: Tensor | None = None) -> Tensor:
        """The one-sample ELBO, (B,) (``beta`` must be 1: the bound has no KL to weight)."""
        if beta != 1:
            raise ConfigError("a two-layer VAE's ELBO has no β")
        return self.log_weights(x, 1)[:, 0]

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The training loop's call before each epoch (0-based): the warm-up's weight
        β = min(1, epoch/warmup) of the latent part of the bound (0 in the first epoch)."""
        self.beta = min(1.0, epoch / self.warmup) if self.warmup else 1.0

    def terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        """k = 1: loss = −ELBO = reconstruction −log p(x | z₁) + kl (the one-sample estimate
        of KL(q(z₁, z₂ | x) ‖ p(z₁, z₂))) and kl_top, its top layer's part log q(z₂ | ·) −
        log p(z₂) (near 0 when z₂ has collapsed to its prior); k > 1: the negative IWAE
        bound. (B,) in nats. In training during a warm-up the latent part is weighed by β
        (k = 1: reconstruction + β·kl)."""
        log_px, log_latent, top = self._log_parts(x, self.k)  # (B, k) each
        beta = self.beta if self.training else 1.0  # the warm-up's weight trains only
        if self.k > 1:
            log_w = log_px + (log_latent if beta == 1 else beta * log_latent)  # (B, k)
            return {"loss": -(torch.logsumexp(log_w, dim=1) - math.log(self.k))}
        reconstruction, kl = -log_px[:, 0], -log_latent[:, 0]
        return {"loss": reconstruction + beta * kl, "reconstruction": reconstruction, "kl": kl,
                "kl_top": top[:, 0]}  # fmt: skip


def precision_weighted(a: DiagonalGaussian, b: DiagonalGaussian) -> DiagonalGaussian:
    """The Gaussian proportional to the product of two diagonal Gaussians: precisions add,
    σ² = 1 / (σ_a⁻² + σ_b⁻²), μ = σ²·(μ_a σ_a⁻² + μ_b σ_b⁻²)."""
    la, lb = a.logvar, b.logvar  # in logs: no precision overflows for tiny variances
    logvar = -torch.logaddexp(-la, -lb)  # log σ² = −log(σ_a⁻² + σ_b⁻²)
    mu = a.mu * torch.sigmoid(lb - la) + b.mu * torch.sigmoid(la - lb)  # weights σ²/σ_a², σ²/σ_b²
    return DiagonalGaussian(mu, logvar)


def build(cfg, loss: str) -> TwoLayerVAE:
    """The two-layer VAE ``cfg`` describes (``loss`` is unused: the objective is the bound)."""
    return TwoLayerVAE(cfg.image_shape, cfg.widths, cfg.bottleneck, cfg.top_widths,
                       cfg.top_bottleneck, cfg.activation, cfg.likelihood, cfg.k, cfg.ladder,
                       cfg.warmup)  # fmt: skip
