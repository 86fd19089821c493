"""The variational autoencoder (§3) and its importance-weighted bound (Burda et al. 2015),
built from shared parts: a posterior q(z | x) (:mod:`~vaelab.models.posteriors`), a prior
p(z) (:mod:`~vaelab.models.priors`) and a decoder likelihood p(x | z)
(:mod:`~vaelab.models.likelihoods`). The objective is kept apart from those distributions."""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.base import LatentModel, widened
from vaelab.models.conditions import condition_table
from vaelab.models.likelihoods import LIKELIHOODS, SIGMA_LIKELIHOODS, likelihood
from vaelab.models.nets import arch
from vaelab.models.posteriors import POSTERIORS, DiagonalGaussian, GaussianPosterior
from vaelab.models.priors import PRIORS, NormalPrior

SIGMA_MIN = 1 / 255
"""The smallest learned σ of a Gaussian likelihood on [0, 1] images: one grey level."""


def check_beta(beta: float, k: int, warmup: int = 0) -> None:
    """β ≠ 1 or a KL warm-up with k > 1 is a ConfigError: the IWAE bound has no KL term to
    weight."""
    if beta != 1 and k > 1:  # it would be silently ignored
        raise ConfigError(
            f"model.beta = {beta} weights the KL term of the ELBO (k = 1); the IWAE bound "
            f"(model.k = {k}) has no β: set one of them to 1"
        )
    if warmup and k > 1:
        raise ConfigError(f"model.warmup = {warmup} ramps the KL term of the ELBO (k = 1); the "
                          f"IWAE bound (model.k = {k}) has none: set model.warmup = 0")  # fmt: skip


class VAE(LatentModel):
    """A variational autoencoder (§3): posterior q(z | x) (default N(μ(x), diag σ²(x))),
    prior p(z) (default N(0, I)), decoder likelihood p(x | z) chosen by name.

    ``encoder`` maps images to the posterior's parameters ((B, 2·Z) = (μ, log σ²) for the
    Gaussian); ``decoder`` maps (B, Z) to logits (B, C, H, W). The per-example objective in
    nats is −ELBO = −E_q[log p(x | z)] + β·KL with one reparameterised sample (β ≠ 1 is the
    β-VAE), or with ``k`` > 1 the negative IWAE bound −log (1/k) Σ_i p(x, z_i)/q(z_i | x),
    which has no β (β ≠ 1 with k > 1 is refused).

    With ``classes`` the model is conditional (a CVAE): the label's condition vector is
    appended to the encoder's input — to the flattened image (``cond_mode="flat"``) or as
    constant image planes (``"planes"``) — and to the code z before decoding.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        likelihood: str = "bernoulli",
        beta: float = 1.0,
        k: int = 1,
        sigma: float = 0.1,
        learn_sigma: bool = False,
        image_shape: tuple[int, int, int] | None = None,
        classes: list[str] | None = None,
        cond_mode: str = "flat",
        prior: nn.Module | None = None,
        posterior: nn.Module | None = None,
        warmup: int = 0,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r} (known: {', '.join(LIKELIHOODS)})"
            )
        if k < 1:
            raise ConfigError(f"the number of importance samples k must be >= 1, got {k}")
        check_beta(beta, k, warmup)
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.likelihood, self.beta, self.k = likelihood, beta, k
        self.full_beta, self.warmup = beta, warmup  # β after the warm-up (and when not training)
        self.prior = NormalPrior(latent_dim) if prior is None else prior
        self.q = GaussianPosterior() if posterior is None else posterior
        log_sigma = torch.full(tuple(image_shape or ()) if learn_sigma else (), math.log(sigma))
        self.learn_sigma = learn_sigma
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)  # one σ per pixel, learned
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.cond_mode = cond_mode
        self.init_conditions(classes)
        self.prior.bind(self, tuple(image_shape or ()))

    @property
    def discrete_likelihood(self) -> bool:
        return likelihood(self.likelihood).discrete

    # ---- conditioning
    def _with(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """The encoder's input: x, with the condition appended when conditional."""
        if not self.conditional:
            return x
        if c is None:
            raise ConfigError("this conditional VAE needs a label for every image")
        if self.cond_mode == "planes":
            planes = c[:, :, None, None].expand(-1, -1, *x.shape[2:])  # (B, D, H, W)
            return torch.cat([x, planes], dim=1)
        return torch.cat([x.flatten(1), c], dim=1)  # (B, C·H·W + D)

    def _decoder(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        """Decoder logits for codes z (B, Z), with the condition appended when conditional."""
        if not self.conditional:
            return self.decoder(z)
        if c is None:
            raise ConfigError("this conditional VAE needs a label to decode")
        return self.decoder(torch.cat([z, c], dim=1))  # (B, Z + D)

    # ---- the verbs
    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None):
        """q(z | x): a distribution object; the Gaussian's unpacks as (μ, log σ²), (B, Z)."""
        return self.q(widened(self.encoder(self._with(x, c))))  # (B, 2Z) -> q

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(x, c).mean  # the posterior mean μ(x), (B, Z)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] in [0, 1], (B, C, H, W)."""
        return likelihood(self.likelihood).mean(self._decoder(z, c), self.sigma_in_use())

    # ---- the objectives, per example in nats
    def log_px(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for decoder outputs ``logits``, (B,)."""
        return likelihood(self.likelihood).log_prob(widened(logits), x, self.sigma_in_use())

    def log_px_k(self, logits: torch.Tensor, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x_b | z_bj) for k decoder outputs per image, logits (B·k, …), x (B, …): (B, k)."""
        return likelihood(self.likelihood).log_prob_k(widened(logits), x, k, self.sigma_in_use())

    def sigma_in_use(self) -> torch.Tensor:
        """log σ of the Gaussian likelihood. A learned σ over [0, 1] images ("gaussian") is
        floored at one grey level (SIGMA_MIN = 1/255): a pixel that is blank in every image
        would otherwise shrink its σ, and raise the likelihood, without bound. The floor
        passes gradients straight through, so a σ pushed below it can come back."""
        if self.learn_sigma and self.likelihood == "gaussian":
            ls = self.log_sigma
            return ls + (ls.clamp_min(math.log(SIGMA_MIN)) - ls).detach()
        return self.log_sigma

    def elbo_terms(self, x: torch.Tensor, c: torch.Tensor | None = None):
        """(−E_q[log p(x | z)], KL(q ‖ p)) per example with one sample z, each (B,). The KL
        is the prior's closed form where it has one, else the one-sample estimate
        log q(z | x) − log p(z)."""
        q = self.posterior(x, c)
        z = q.rsample()  # reparameterisation, (B, Z)
        kl = self.prior.kl(q)  # closed form (computed after z: the gradients sum in this order)
        if kl is None:
            kl = q.log_prob(z) - self.prior.log_prob(z)  # one-sample estimate, (B,)
        return -self.log_px(self._decoder(z, c), x), kl

    def elbo(
        self, x: torch.Tensor, beta: float = 1.0, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)) with one sample z = μ + σ·ε, (B,)."""
        reconstruction, kl = self.elbo_terms(x, c)
        return -(reconstruction + beta * kl)

    def log_weights(
        self, x: torch.Tensor, k: int, posterior=None, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x) for k draws z_i ~ q(z | x),
        shape (B, k). ``posterior`` = q(z | x) when already computed (for the Gaussian also
        a plain pair (μ, log σ²))."""
        q = self.posterior(x, c) if posterior is None else posterior
        if isinstance(q, tuple | list) and not hasattr(q, "rsample_k"):
            q = DiagonalGaussian(*q)
        z, log_q = q.rsample_k(k)  # (B, k, Z), (B, k)
        b, _, zdim = z.shape
        log_p = self.prior.log_prob(z)  # (B, k)
        ck = None if c is None else c.repeat_interleave(k, dim=0)  # (B·k, D)
        logits = self._decoder(z.reshape(b * k, zdim), ck)  # (B·k, Z) -> (B·k, C, H, W)
        return self.log_px_k(logits, x, k) + log_p - log_q  # (B, k)

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The training loop's call before each epoch (0-based): the KL warm-up's weight
        β·min(1, epoch/warmup), 0 in the first epoch. Training only: in eval mode (the per-epoch
        test loss, which ``train.keep_best`` and early stopping compare across epochs) the loss
        weighs the KL by the full β."""
        ramp = min(1.0, epoch / self.warmup) if self.warmup else 1.0
        self.beta = self.full_beta * ramp

    def iwae_bound(self, x: torch.Tensor, k: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """log (1/k) Σ_i w_i, the k-sample importance-weighted bound (k = 1: the ELBO), (B,)."""
        return torch.logsumexp(self.log_weights(x, k, c=c), dim=1) - math.log(k)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """k = 1: reconstruction −E_q[log p(x | z)], kl, and loss = reconstruction + β·kl
        (−ELBO); k > 1: loss = the negative IWAE bound. Each (B,) in nats."""
        c = self.condition(y)
        if self.k > 1:
            return {"loss": -self.iwae_bound(x, self.k, c)}
        reconstruction, kl = self.elbo_terms(x, c)
        beta = self.beta if self.training else self.full_beta  # the warm-up's weight trains only
        return {"loss": reconstruction + beta * kl, "reconstruction": reconstruction,
                "kl": kl}  # fmt: skip


def build(cfg, loss: str) -> VAE:
    """The VAE ``cfg`` describes: its posterior and prior from [model.posterior] and
    [model.prior] (``loss`` is unused: the objective is the ELBO or the IWAE bound)."""
    make_encoder, make_decoder, cond_mode = arch(cfg)
    classes = cfg.classes if cfg.conditional else []
    if cfg.conditional and not classes:
        raise ConfigError("model.conditional needs a labelled data set (model.classes is empty)")
    d = condition_table(classes).shape[1] if classes else 0  # condition width D
    for table, registry in (("prior", PRIORS), ("posterior", POSTERIORS)):
        if (kind := getattr(cfg, table).kind) not in registry:
            raise ConfigError(f"model.{table}.kind {kind!r} has options but no {table} to build "
                              f"(known: {', '.join(registry)})")  # fmt: skip
    posterior = POSTERIORS[cfg.posterior.kind](cfg.posterior, cfg.bottleneck)
    prior = PRIORS[cfg.prior.kind](cfg.bottleneck, cfg.prior)
    return VAE(
        make_encoder(cfg, posterior.outputs_per_dim * cfg.bottleneck, d),  # e.g. (μ, log σ²)
        make_decoder(cfg, cfg.bottleneck + d),
        cfg.bottleneck,
        cfg.likelihood,
        cfg.beta,
        cfg.k,
        cfg.sigma,
        cfg.learn_sigma,
        tuple(cfg.image_shape),
        classes,
        cond_mode,
        prior,
        posterior,
        cfg.warmup,
    )


def check(cfg) -> None:
    """The VAE's own rules: β only with k = 1, σ only under a likelihood that has one."""
    check_beta(cfg.beta, cfg.k, cfg.warmup)
    default = type(cfg)()
    if cfg.likelihood not in SIGMA_LIKELIHOODS and (
        sigma := [k for k in ("sigma", "learn_sigma") if getattr(cfg, k) != getattr(default, k)]
    ):
        raise ConfigError(
            f"model.{sigma[0]} applies to the likelihoods {', '.join(SIGMA_LIKELIHOODS)} only "
            f"(model.likelihood is {cfg.likelihood!r})"
        )
