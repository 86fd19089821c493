"""Deterministic autoencoders with a regularised code space, both sampled without an
encoder variance:

- **RAE** (Ghosh et al. 2020), ``model.kind = "rae"``: reconstruction + β·½‖z‖² + λ·(a
  decoder penalty: ``"l2"`` = Σθ² of the decoder's weights, ``"gp"`` = ‖∂D/∂z‖²_F, or
  ``"none"``); it samples through the ex-post mixture fitted after training
  (``[model.expost]``, :mod:`~vaelab.models.gmm`).
- **WAE-MMD** (Tolstikhin et al. 2018), ``model.kind = "wae"``: reconstruction + β·MMD²
  between the codes of the batch and as many draws of the prior N(0, I), with the inverse
  multiquadratic kernel over several scales; it samples from N(0, I) itself, or from an
  ex-post mixture when ``[model.expost]`` is given.

Each term is per example in the unit of the reconstruction loss (``train.loss``), reduced
once by the training loop.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vaelab.config import ExPostConfig
from vaelab.errors import ConfigError
from vaelab.models.ae import Autoencoder
from vaelab.models.base import widened
from vaelab.models.gmm import expost_stage
from vaelab.models.nets import arch
from vaelab.models.priors import NormalPrior
from vaelab.thesis.losses import LOSS_TAKES_LOGITS, LOSSES

PENALTIES = ("l2", "gp", "none")
"""model.decoder_penalty values of an RAE."""

IMQ_SCALES = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
"""Multiples of C = 2·Z (the prior's 2·Z·σ², σ = 1) summed in the WAE's IMQ kernel."""


class RegularisedAE(Autoencoder):
    """An autoencoder whose objective adds a term on its codes (``code_term``) weighted by
    ``beta``; the reconstruction is the autoencoder's own loss."""

    def __init__(self, encoder, decoder, loss: str, beta: float):
        super().__init__(encoder, decoder, loss)
        self.beta = beta

    def reconstruction(self, logits: Tensor, x: Tensor) -> Tensor:
        pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
        return LOSSES[self.loss](pred, x)  # (B,)


class RAE(RegularisedAE):
    """Reconstruction + β·½‖z‖² + λ·decoder penalty, per example (B,)."""

    def __init__(self, encoder, decoder, loss, beta, penalty: str, weight: float):
        super().__init__(encoder, decoder, loss, beta)
        if penalty not in PENALTIES:
            raise ConfigError(f"model.decoder_penalty must be one of {', '.join(PENALTIES)}, "
                              f"got {penalty!r}")  # fmt: skip
        self.penalty, self.weight = penalty, weight

    def decoder_penalty(self, z: Tensor, logits: Tensor) -> Tensor:
        """ "l2": Σθ² over the decoder's weights, the same for every example; "gp": an
        unbiased one-draw estimate of ‖∂D(z)/∂z‖²_F, E_v ‖vᵀ J‖² with v ~ N(0, I) over the
        decoder's outputs (logits), per example. (B,)"""
        if self.penalty == "l2":
            total = sum(p.square().sum() for p in self.decoder.parameters())
            return total.expand(len(z))
        v = torch.randn_like(logits)
        if torch.is_grad_enabled() and z.requires_grad:  # training: its gradient flows
            (g,) = torch.autograd.grad((logits * v).sum(), z, create_graph=True)  # (B, Z) vᵀJ
            return g.square().sum(1)
        with torch.enable_grad():  # evaluating under no_grad: its value only
            zz = z.detach().requires_grad_()
            (g,) = torch.autograd.grad((widened(self.decoder(zz)) * v).sum(), zz)
        return g.square().sum(1)

    def terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        z = self.encode(x)  # (B, C, H, W) -> (B, Z)
        logits = widened(self.decoder(z))  # (B, Z) -> (B, C, H, W)
        rec, code = self.reconstruction(logits, x), 0.5 * z.square().sum(1)
        out = {"reconstruction": rec, "code": code}
        loss = rec + self.beta * code
        if self.penalty != "none":
            out["decoder_penalty"] = self.decoder_penalty(z, logits)
            loss = loss + self.weight * out["decoder_penalty"]
        return {"loss": loss, **out}


def imq(a: Tensor, b: Tensor, scales: tuple[float, ...] = IMQ_SCALES) -> Tensor:
    """Σ_s C_s / (C_s + ‖a_i − b_j‖²), C_s = 2·Z·s: (N, Z), (M, Z) -> (N, M)."""
    d2 = torch.cdist(a, b).square()  # (N, M)
    c = 2.0 * a.shape[1]
    return sum(c * s / (c * s + d2) for s in scales)


def mmd_per_example(z: Tensor, p: Tensor) -> Tensor:
    """Per-example parts m_i of the unbiased MMD² estimate between codes z (B, Z) and prior
    draws p (B, Z): m_i = Σ_{j≠i} k(z_i, z_j)/(B−1) + Σ_{j≠i} k(p_i, p_j)/(B−1)
    − 2 Σ_j k(z_i, p_j)/B, whose mean over i is the estimate. (B,)"""
    b = len(z)
    if b < 2:
        return z.new_zeros(b)
    off = 1 - torch.eye(b, dtype=z.dtype, device=z.device)  # (B, B) without i = j
    kzz = (imq(z, z) * off).sum(1) / (b - 1)
    kpp = (imq(p, p) * off).sum(1) / (b - 1)
    kzp = imq(z, p).sum(1) / b
    return kzz + kpp - 2 * kzp


class WAE(RegularisedAE):
    """Reconstruction + β·MMD²(codes, N(0, I) draws), per example (B,); it samples from
    its prior N(0, I)."""

    stages = ()

    def __init__(self, encoder, decoder, loss, beta, dim: int):
        super().__init__(encoder, decoder, loss, beta)
        self.prior = NormalPrior(dim)

    def terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        z = self.encode(x)  # (B, Z)
        rec = self.reconstruction(widened(self.decoder(z)), x)
        mmd = mmd_per_example(widened(z), torch.randn_like(widened(z)))  # (B,)
        return {"loss": rec + self.beta * mmd, "reconstruction": rec, "mmd": mmd}


def build_rae(cfg, loss: str) -> RAE:
    make_encoder, make_decoder, _ = arch(cfg)
    model = RAE(make_encoder(cfg, cfg.bottleneck), make_decoder(cfg, cfg.bottleneck), loss,
                cfg.beta, cfg.decoder_penalty, cfg.penalty_weight)  # fmt: skip
    model.stages = (expost_stage(cfg.expost),)
    return model


def build_wae(cfg, loss: str) -> WAE:
    """A WAE samples from N(0, I); given a [model.expost] table it samples from that
    density fitted to its codes instead (Ghosh et al. 2020 compare both)."""
    make_encoder, make_decoder, _ = arch(cfg)
    model = WAE(make_encoder(cfg, cfg.bottleneck), make_decoder(cfg, cfg.bottleneck), loss,
                cfg.beta, cfg.bottleneck)  # fmt: skip
    if cfg.expost != ExPostConfig():
        model.stages = (expost_stage(cfg.expost),)
    return model
