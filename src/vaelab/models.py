"""Autoencoders (Def 2.1.5) with injectable encoder and decoder networks, and the builders
that make fully connected (Def 2.3.1-2.3.3) and convolutional ones from a config.

Every model speaks one interface, which the trainer, evaluation and plots rely on:

- ``encode(x)``: images (B, C, H, W) in [0, 1] -> latent codes (B, n_b)
- ``decode(z)``: codes (B, n_b) -> images (B, C, H, W) in [0, 1]
- ``reconstruct(x)`` = decode(encode(x)), also ``forward``
- ``objective(x)``: the per-example training loss, shape (B,), reduced once by the trainer

Decoders end in logits (no output activation); ``decode`` applies the sigmoid so pixels
stay in [0, 1], and losses that work from logits (BCE) get the logits directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.losses import LIKELIHOODS, LOSS_TAKES_LOGITS, LOSSES, kl_normal_std
from vaelab.nn import (
    activation,
    check_decoder_widths,
    check_encoder_widths,
    decoder_mlp,
    encoder_mlp,
)

_LOG_2PI = math.log(2 * math.pi)


class LatentModel(nn.Module):
    """The verbs every model shares, built on its ``encode`` and ``decode``.

    Every model speaks one interface, which the trainer, evaluation and plots rely on."""

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    @torch.no_grad()
    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Decode ``steps`` evenly spaced points on the line between the codes of two images
        x1, x2 (each (C, H, W) or (1, C, H, W)); returns (steps, C, H, W)."""
        z1, z2 = (
            self.encode(x1.reshape(1, *x1.shape[-3:])),
            self.encode(x2.reshape(1, *x2.shape[-3:])),
        )
        t = torch.linspace(0, 1, steps, device=z1.device).unsqueeze(1)  # (steps, 1)
        return self.decode((1 - t) * z1 + t * z2)  # (steps, Z) -> (steps, C, H, W)


class Autoencoder(LatentModel):
    """The autoencoding network f_a = f_d ∘ f_e of Def 2.1.5.

    ``encoder`` maps (B, C, H, W) to (B, n_b), ``decoder`` maps (B, n_b) to logits of shape
    (B, C, H, W); ``loss`` names a per-example reconstruction loss of :mod:`vaelab.losses`.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss: str = "mse"):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.encoder, self.decoder, self.loss = encoder, decoder, loss

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, n_b)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))  # (B, n_b) -> (B, C, H, W) in [0, 1]

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example reconstruction loss L(ψ, f_a(ψ)) (Def 2.2.1), shape (B,)."""
        logits = self.decoder(self.encode(x))  # (B, C, H, W)
        pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
        return LOSSES[self.loss](pred, x)


class VAE(LatentModel):
    """A variational autoencoder (§3): Gaussian encoder q(z | x) = N(μ(x), diag σ²(x)),
    prior p(z) = N(0, I), decoder likelihood p(x | z) chosen by name.

    ``encoder`` maps images to (B, 2·Z) = (μ, log σ²); ``decoder`` maps (B, Z) to logits
    (B, C, H, W). The per-example objective in nats is −ELBO = −E_q[log p(x | z)] + β·KL
    with one reparameterised sample (β ≠ 1 is the β-VAE), or with ``k`` > 1 the negative
    IWAE bound −log (1/k) Σ_i p(x, z_i)/q(z_i | x) (Burda et al. 2015), where β is unused.
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
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r} (known: {', '.join(LIKELIHOODS)})"
            )
        if k < 1:
            raise ConfigError(f"the number of importance samples k must be >= 1, got {k}")
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.likelihood, self.beta, self.k = likelihood, beta, k
        log_sigma = torch.full(tuple(image_shape or ()) if learn_sigma else (), math.log(sigma))
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)  # one σ per pixel, learned
        else:
            self.register_buffer("log_sigma", log_sigma)

    # ---- the verbs
    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x), each (B, Z)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)  # (B, 2Z) -> 2 x (B, Z)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x)[0]  # the posterior mean μ(x), (B, Z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """E[x | z] in [0, 1], (B, C, H, W)."""
        return LIKELIHOODS[self.likelihood][1](self.decoder(z), self.log_sigma)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``n`` draws z ~ N(0, I) of the prior: new images (n, C, H, W) in [0, 1]."""
        device = self.log_sigma.device
        z = torch.randn(n, self.latent_dim, generator=generator, device=device)  # (n, Z)
        return self.decode(z)

    # ---- the objectives, per example in nats
    def log_px(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for decoder outputs ``logits``, (B,)."""
        return LIKELIHOODS[self.likelihood][0](logits, x, self.log_sigma)

    def elbo(self, x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
        """E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)) with one sample z = μ + σ·ε, (B,)."""
        mu, logvar = self.posterior(x)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        return self.log_px(self.decoder(z), x) - beta * kl_normal_std(mu, logvar)

    def log_weights(self, x: torch.Tensor, k: int, posterior=None) -> torch.Tensor:
        """log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x) for k draws z_i ~ q(z | x),
        shape (B, k). ``posterior`` = (μ, log σ²) when already computed."""
        mu, logvar = self.posterior(x) if posterior is None else posterior
        b, zdim = mu.shape
        eps = torch.randn(b, k, zdim, device=mu.device, dtype=mu.dtype)  # (B, k, Z)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B, k, Z)
        log_q = -0.5 * (eps.square() + logvar.unsqueeze(1) + _LOG_2PI).sum(-1)  # (B, k)
        log_p = -0.5 * (z.square() + _LOG_2PI).sum(-1)  # (B, k)
        logits = self.decoder(z.reshape(b * k, zdim))  # (B·k, Z) -> (B·k, C, H, W)
        xk = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
        log_px = self.log_px(logits, xk).reshape(b, k)  # (B, k)
        return log_px + log_p - log_q

    def iwae_bound(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log (1/k) Σ_i w_i, the k-sample importance-weighted bound (k = 1: the ELBO), (B,)."""
        return torch.logsumexp(self.log_weights(x, k), dim=1) - math.log(k)

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """−ELBO (β-weighted) for k = 1, else the negative IWAE bound; (B,) in nats."""
        return -self.elbo(x, self.beta) if self.k == 1 else -self.iwae_bound(x, self.k)


# --------------------------------------------------------------------------------------
# Encoder / decoder builders
# --------------------------------------------------------------------------------------


def mlp_encoder(cfg: ModelConfig, out_dim: int) -> nn.Module:
    """Flatten (Lemma 1.3.7), then a linear encoder C·H·W ≥ widths… ≥ out_dim (Def 2.3.1)."""
    c, h, w = cfg.image_shape
    return nn.Sequential(
        nn.Flatten(),  # (B, C, H, W) -> (B, C·H·W)
        encoder_mlp([c * h * w, *cfg.widths, out_dim], cfg.activation),
    )


def mlp_decoder(cfg: ModelConfig, in_dim: int) -> nn.Module:
    """A linear decoder in_dim ≤ mirrored widths… ≤ C·H·W (Def 2.3.2), then unflatten."""
    c, h, w = cfg.image_shape
    return nn.Sequential(
        decoder_mlp([in_dim, *reversed(cfg.widths), c * h * w], cfg.activation),
        nn.Unflatten(1, (c, h, w)),  # (B, C·H·W) -> (B, C, H, W)
    )


def _pooled_sizes(cfg: ModelConfig) -> list[tuple[int, int]]:
    """Resolutions (H_i, W_i) after each 2x2 max-pool of the conv encoder."""
    _, h, w = cfg.image_shape
    sizes = [(h, w)]
    for _ in cfg.channels:
        h, w = h // 2, w // 2
        if min(h, w) < 1:
            raise ConfigError(
                f"model.channels has {len(cfg.channels)} pooling blocks, too many for "
                f"images of {cfg.image_shape[1]}x{cfg.image_shape[2]}"
            )
        sizes.append((h, w))
    return sizes


def conv_encoder(cfg: ModelConfig, out_dim: int) -> nn.Module:
    """Image layers φ(T_conv ψ + b) (Def 1.3.9, 1.3.10) each followed by 2x2 max-pooling
    (Def 1.3.13), then a linear layer to ``out_dim``. 3x3 kernels with padding 1 keep the
    resolution, so only the pooling shrinks it."""
    c = cfg.image_shape[0]
    layers: list[nn.Module] = []
    for ch in cfg.channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1), activation(cfg.activation), nn.MaxPool2d(2)]
        c = ch
    h, w = _pooled_sizes(cfg)[-1]
    flat = c * h * w
    layers += [nn.Flatten(), encoder_mlp([flat, *cfg.widths, out_dim], cfg.activation)]
    return nn.Sequential(*layers)  # (B, C, H, W) -> (B, out_dim)


def conv_decoder(cfg: ModelConfig, in_dim: int) -> nn.Module:
    """The mirror of :func:`conv_encoder`: a linear layer to the smallest feature map, then
    per block an upsampling to the encoder's resolution at that depth and a 3x3 image
    layer, so any image size comes back exactly; the last layer gives C logit channels."""
    sizes = _pooled_sizes(cfg)
    chans = [cfg.image_shape[0], *cfg.channels]
    h, w = sizes[-1]
    layers: list[nn.Module] = [
        decoder_mlp([in_dim, *reversed(cfg.widths), chans[-1] * h * w], cfg.activation),
        activation(cfg.activation),
        nn.Unflatten(1, (chans[-1], h, w)),  # (B, c·h·w) -> (B, c, h, w)
    ]
    for i in range(len(cfg.channels), 0, -1):
        last = i == 1
        layers += [
            nn.Upsample(size=sizes[i - 1], mode="nearest"),  # (B, c, h, w) -> (B, c, 2h', 2w')
            nn.Conv2d(chans[i], chans[i - 1], 3, padding=1),  # (B, c_i, ., .) -> (B, c_{i-1}, ., .)
        ]
        if not last:
            layers.append(activation(cfg.activation))
    return nn.Sequential(*layers)  # (B, in_dim) -> (B, C, H, W) logits


ARCHS: dict[str, tuple[Callable[[ModelConfig, int], nn.Module], ...]] = {
    "mlp": (mlp_encoder, mlp_decoder),
    "conv": (conv_encoder, conv_decoder),
}


def build_autoencoder(cfg: ModelConfig, loss: str) -> Autoencoder:
    make_encoder, make_decoder = _arch(cfg)
    return Autoencoder(make_encoder(cfg, cfg.bottleneck), make_decoder(cfg, cfg.bottleneck), loss)


def build_vae(cfg: ModelConfig, loss: str) -> VAE:
    make_encoder, make_decoder = _arch(cfg)
    return VAE(
        make_encoder(cfg, 2 * cfg.bottleneck),  # (μ, log σ²)
        make_decoder(cfg, cfg.bottleneck),
        cfg.bottleneck,
        cfg.likelihood,
        cfg.beta,
        cfg.k,
        cfg.sigma,
        cfg.learn_sigma,
        tuple(cfg.image_shape),
    )


MODELS: dict[str, Callable[[ModelConfig, str], nn.Module]] = {
    "ae": build_autoencoder,
    "vae": build_vae,
}


def _arch(cfg: ModelConfig) -> tuple[Callable[[ModelConfig, int], nn.Module], ...]:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown model.arch {cfg.arch!r} (known: {', '.join(ARCHS)})")
    if len(cfg.image_shape) != 3:
        raise ConfigError(f"model.image_shape must be (C, H, W), got {cfg.image_shape}")
    if cfg.bottleneck < 1:
        raise ConfigError(f"model.bottleneck must be positive, got {cfg.bottleneck}")
    try:
        check_encoder_widths([math.prod(cfg.image_shape), *cfg.widths, cfg.bottleneck])
        check_decoder_widths([cfg.bottleneck, *reversed(cfg.widths), math.prod(cfg.image_shape)])
    except ValueError as e:
        raise ConfigError(f"model.widths {cfg.widths}: {e}") from e
    return ARCHS[cfg.arch]


def build_model(cfg: ModelConfig, loss: str) -> nn.Module:
    """The model a config describes (``cfg.image_shape`` must be filled in)."""
    if cfg.kind not in MODELS:
        raise ConfigError(f"unknown model.kind {cfg.kind!r} (known: {', '.join(MODELS)})")
    try:
        return MODELS[cfg.kind](cfg, loss)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e
