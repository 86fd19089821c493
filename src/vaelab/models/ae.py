"""The autoencoder (Def 2.1.5) and its ex-post density (:mod:`~vaelab.models.gmm`): the
"AE + Gaussian" (or "AE + mixture") generator."""

from __future__ import annotations

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.base import LatentModel, widened
from vaelab.models.gmm import EXPOST_GAUSSIAN, expost_stage, gaussian_fit
from vaelab.models.nets import arch
from vaelab.models.priors import GaussianPrior
from vaelab.models.stages import encode_all
from vaelab.thesis.losses import LOSS_TAKES_LOGITS, LOSSES


class Autoencoder(LatentModel):
    """The autoencoding network f_a = f_d ∘ f_e of Def 2.1.5.

    ``encoder`` maps (B, C, H, W) to (B, n_b), ``decoder`` maps (B, n_b) to logits of shape
    (B, C, H, W); ``loss`` names a per-example reconstruction loss of
    :mod:`vaelab.thesis.losses`. :meth:`fit_prior` fits a Gaussian to the codes of a data
    set (the stage :data:`EXPOST_GAUSSIAN`), after which :meth:`sample` generates from it.
    """

    stages = (EXPOST_GAUSSIAN,)

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss: str = "mse"):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.prior = None  # the Gaussian fitted after training (fit_prior, its stage)
        self.init_conditions(None)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, n_b)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))  # (B, n_b) -> (B, C, H, W) in [0, 1]

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The per-example reconstruction loss L(ψ, f_a(ψ)) (Def 2.2.1), (B,)."""
        logits = widened(self.decoder(self.encode(x)))  # (B, C, H, W)
        pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
        return {"loss": LOSSES[self.loss](pred, x)}

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, batch: int = 4096) -> None:
        """Fit N(mean, cov) to the codes of images ``x`` (N, C, H, W) in [0, 1]."""
        self.prior = GaussianPrior(**gaussian_fit(encode_all(self, x, batch)))

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, temperature: float = 1.0) -> torch.Tensor:
        """Decode ``n`` draws from the Gaussian fitted by :meth:`fit_prior`."""
        if self.prior is None:
            raise ConfigError("an autoencoder samples only after fit_prior(images)")
        if labels is not None:
            raise ConfigError("an autoencoder cannot generate by label; train a conditional VAE")
        return super().sample(n, None, generator, temperature)


def build(cfg, loss: str) -> Autoencoder:
    """The autoencoder ``cfg`` describes, trained with reconstruction loss ``loss``."""
    make_encoder, make_decoder, _ = arch(cfg)
    model = Autoencoder(make_encoder(cfg, cfg.bottleneck), make_decoder(cfg, cfg.bottleneck), loss)
    model.stages = (expost_stage(cfg.expost),)  # [model.expost]: one Gaussian, or a mixture
    return model
