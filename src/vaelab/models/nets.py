"""The networks a ``[model]`` config describes: fully connected (Def 2.3.1-2.3.3) and
convolutional (§1.3) encoders and decoders, chosen by ``model.arch`` from the registry
``ARCHS``, with the checks that turn a bad config into one ConfigError naming the key.
Families (:mod:`vaelab.models.registry`) build their models from these.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.thesis.nn import (
    activation,
    check_decoder_widths,
    check_encoder_widths,
    decoder_mlp,
    encoder_mlp,
)


def _checked(check: Callable[[list[int]], object], sizes: list[int], cfg: ModelConfig) -> list[int]:
    """``sizes`` after the encoder's or decoder's width rule ``check``; a violation is a
    ConfigError that names model.widths."""
    try:
        check(sizes)
    except ValueError as e:
        raise ConfigError(
            f"model.widths = {cfg.widths} between {sizes[0]} inputs and {sizes[-1]} outputs: {e}"
        ) from e
    return sizes


def _encoder_head(cfg: ModelConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The dense part of an encoder: in_dim ≥ widths… ≥ out_dim (Def 2.1.1)."""
    sizes = _checked(check_encoder_widths, [in_dim, *cfg.widths, out_dim], cfg)
    return encoder_mlp(sizes, cfg.activation)


def _decoder_head(cfg: ModelConfig, in_dim: int, out_dim: int) -> nn.Module:
    """The dense part of a decoder: in_dim ≤ mirrored widths… ≤ out_dim (Def 2.1.2)."""
    sizes = _checked(check_decoder_widths, [in_dim, *reversed(cfg.widths), out_dim], cfg)
    return decoder_mlp(sizes, cfg.activation)


def mlp_encoder(cfg: ModelConfig, out_dim: int, extra_in: int = 0) -> nn.Module:
    """Flatten (Lemma 1.3.7), then a linear encoder C·H·W ≥ widths… ≥ out_dim (Def 2.3.1).
    ``extra_in`` widens the input for a condition appended to the flattened image.
    No hidden widths leave one affine map each way: asked for only with ``activation =
    "identity"`` (a linear autoencoder, Def 2.3.3), the same model whatever the widths."""
    if not cfg.widths and cfg.activation != "identity":
        raise ConfigError(
            f"model.widths = [] leaves the mlp no hidden layer, so model.activation = "
            f"{cfg.activation!r} is never applied: give hidden widths, e.g. [512, 256], or set "
            'activation = "identity" for a linear autoencoder'
        )
    c, h, w = cfg.image_shape
    return nn.Sequential(
        nn.Flatten(),  # (B, C, H, W) -> (B, C·H·W); already flat inputs pass unchanged
        _encoder_head(cfg, c * h * w + extra_in, out_dim),
    )


def mlp_decoder(cfg: ModelConfig, in_dim: int) -> nn.Module:
    """A linear decoder in_dim ≤ mirrored widths… ≤ C·H·W (Def 2.3.2), then unflatten."""
    c, h, w = cfg.image_shape
    return nn.Sequential(
        _decoder_head(cfg, in_dim, c * h * w),
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


def conv_features(cfg: ModelConfig, extra_in: int = 0) -> tuple[nn.Sequential, int]:
    """Image layers φ(T_conv ψ + b) (Def 1.3.9, 1.3.10) each followed by 2x2 max-pooling
    (Def 1.3.13), flattened; returns the network and its output width. 3x3 kernels with
    padding 1 keep the resolution, so only the pooling shrinks it. ``extra_in`` adds input
    channels (condition planes)."""
    c = cfg.image_shape[0] + extra_in
    layers: list[nn.Module] = []
    for ch in cfg.channels:
        layers += [nn.Conv2d(c, ch, 3, padding=1), activation(cfg.activation), nn.MaxPool2d(2)]
        c = ch
    h, w = _pooled_sizes(cfg)[-1]
    return nn.Sequential(*layers, nn.Flatten()), c * h * w  # (B, C, H, W) -> (B, c·h·w)


def conv_encoder(cfg: ModelConfig, out_dim: int, extra_in: int = 0) -> nn.Module:
    """:func:`conv_features`, then a linear encoder to ``out_dim``."""
    features, flat = conv_features(cfg, extra_in)
    return nn.Sequential(features, _encoder_head(cfg, flat, out_dim))


def conv_decoder(cfg: ModelConfig, in_dim: int) -> nn.Module:
    """The mirror of :func:`conv_encoder`: a linear layer to the smallest feature map, then
    per block an upsampling to the encoder's resolution at that depth and a 3x3 image
    layer, so any image size comes back exactly; the last layer gives C logit channels."""
    sizes = _pooled_sizes(cfg)
    chans = [cfg.image_shape[0], *cfg.channels]
    h, w = sizes[-1]
    layers: list[nn.Module] = [
        _decoder_head(cfg, in_dim, chans[-1] * h * w),
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


ARCHS: dict[str, tuple[Callable[..., nn.Module], Callable[..., nn.Module], str]] = {
    # arch: (encoder builder, decoder builder, how a VAE appends a condition to the image)
    "mlp": (mlp_encoder, mlp_decoder, "flat"),
    "conv": (conv_encoder, conv_decoder, "planes"),
}


def check_image_shape(cfg: ModelConfig) -> None:
    if len(cfg.image_shape) != 3 or min(cfg.image_shape) < 1:
        raise ConfigError(f"model.image_shape must be (C, H, W), got {cfg.image_shape}")


def arch(cfg: ModelConfig) -> tuple[Callable[..., nn.Module], Callable[..., nn.Module], str]:
    if cfg.arch not in ARCHS:
        raise ConfigError(f"unknown model.arch {cfg.arch!r} (known: {', '.join(ARCHS)})")
    check_image_shape(cfg)
    return ARCHS[cfg.arch]
