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
from vaelab.losses import LOSS_TAKES_LOGITS, LOSSES
from vaelab.nn import (
    activation,
    check_decoder_widths,
    check_encoder_widths,
    decoder_mlp,
    encoder_mlp,
)


class Autoencoder(nn.Module):
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

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    def objective(self, x: torch.Tensor) -> torch.Tensor:
        """Per-example reconstruction loss L(ψ, f_a(ψ)) (Def 2.2.1), shape (B,)."""
        logits = self.decoder(self.encode(x))  # (B, C, H, W)
        pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
        return LOSSES[self.loss](pred, x)


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


MODELS: dict[str, Callable[[ModelConfig, str], nn.Module]] = {"ae": build_autoencoder}


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
