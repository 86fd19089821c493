"""The classifier that judges generated images: a small CNN (conv features of §1.3, then a
dense head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.base import Model, widened
from vaelab.models.nets import check_image_shape, conv_features
from vaelab.thesis.nn import MLP


class Classifier(Model):
    """A CNN that reads class labels; the judge of generated images. ``features`` is its
    penultimate layer (for Fréchet distances). Images wider than it was trained on are read
    slot by slot: a 28x84 composite is three 28x28 digits (:meth:`read`)."""

    def __init__(self, features: nn.Module, head: nn.Module, classes: list[str], image_shape):
        super().__init__()
        self.body, self.head = features, head
        self.classes, self.image_shape = list(classes), tuple(image_shape)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, C, H, W) -> (B, F)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # (B, K)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits(x)

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Cross-entropy −log p(y | x) per example, (B,) in nats."""
        if y is None:
            raise ConfigError("a classifier trains on a labelled data set")
        return {"loss": F.cross_entropy(widened(self.logits(x)), y, reduction="none")}

    def slots(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, S·W) -> (B·S, C, H, W): images of S digits side by side, cut into the
        trained image size; any other height, channel count or width is a ConfigError."""
        c, h, w = self.image_shape
        if x.ndim != 4 or x.shape[1] != c or x.shape[2] != h or x.shape[3] % w:
            raise ConfigError(f"cannot read images of shape {tuple(x.shape[1:])} with a "
                              f"classifier of {c}x{h}x{w} images")  # fmt: skip
        s = x.shape[3] // w
        return x.unflatten(-1, (s, w)).permute(0, 3, 1, 2, 4).flatten(0, 1)  # (B·S, C, H, W)

    @torch.no_grad()
    def read(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices (B, S) for images of width S·W (S slots of the trained width W)."""
        slots = x.shape[-1] // self.image_shape[2]
        return self.logits(self.slots(x)).argmax(1).reshape(x.shape[0], slots)


def build(cfg, loss: str) -> Classifier:
    """The CNN judge ``cfg`` describes: conv features, then a dense head to the classes."""
    if cfg.arch != "conv":
        raise ConfigError(f"a classifier has model.arch = 'conv', got {cfg.arch!r}")
    check_image_shape(cfg)
    if not cfg.classes:
        raise ConfigError("a classifier needs a labelled data set (model.classes is empty)")
    features, flat = conv_features(cfg)
    head = MLP([flat, *cfg.widths, len(cfg.classes)], cfg.activation)
    return Classifier(nn.Sequential(features, *list(head)[:-2]), nn.Sequential(*list(head)[-2:]),
                      cfg.classes, cfg.image_shape)  # fmt: skip
