"""The VQ-VAE (van den Oord et al. 2017), ``model.kind = "vq_vae"``, with a learned prior
over its codes (:mod:`~vaelab.models.code_prior`).

A convolutional encoder maps an image to an H'×W' grid of D-dimensional vectors z_e
(D = ``model.bottleneck``; one stride-2 convolution per ``model.channels`` entry), each
replaced by its nearest codebook entry e_k (K = ``model.codebook``). The decoder sees the
quantised grid; its gradient passes straight through to z_e. Per example, in the unit of
the reconstruction loss (``train.loss``):

    loss = reconstruction + ‖sg(z_e) − e‖² + β·‖z_e − sg(e)‖² + (−log p(codes)),

the codebook term dropped when the codebook follows exponential moving averages
(``model.ema``). The prior learns on the codes with the gradient stopped, so it never
changes the autoencoder; ``[model.code_prior] freeze_after`` = N freezes the autoencoder from epoch
N on, when the prior trains alone on its fixed codes. Entries unused for
:data:`RESTART_AFTER` steps are re-seeded from encoder outputs of the batch (dead-code
restarts). With a Bernoulli-type loss on binarised data, reconstruction −log p(codes) is an
upper bound on −log p(x) (the codes are a deterministic function of x).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.config import CodePriorConfig
from vaelab.errors import ConfigError
from vaelab.models.base import LatentModel, widened
from vaelab.models.code_prior import CODE_PRIORS
from vaelab.thesis.losses import LOSS_TAKES_LOGITS, LOSSES

EMA_DECAY = 0.99
RESTART_AFTER = 200
"""Training steps without a single use after which a codebook entry is re-seeded."""


class Quantizer(nn.Module):
    """Nearest-entry vector quantisation of a grid of vectors (B, D, H, W) with K entries."""

    def __init__(self, entries: int, dim: int, ema: bool):
        super().__init__()
        self.ema = ema
        init = torch.empty(entries, dim).uniform_(-1 / entries, 1 / entries)
        if ema:
            self.register_buffer("codebook", init)
            self.register_buffer("cluster_size", torch.ones(entries))
            self.register_buffer("embed_sum", init.clone())
        else:
            self.codebook = nn.Parameter(init)
        self.register_buffer("idle", torch.zeros(entries, dtype=torch.long))  # steps unused

    def nearest(self, flat: Tensor) -> Tensor:
        """Index of the nearest entry of each row of ``flat`` (N, D) -> (N,)."""
        e = self.codebook
        d2 = flat.square().sum(1, keepdim=True) - 2 * flat @ e.T + e.square().sum(1)  # (N, K)
        return d2.argmin(1)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(straight-through quantised grid (B, D, H, W), indices (B, H, W), codebook loss
        (B,), commitment loss (B,))."""
        with torch.autocast(z.device.type, enabled=False):  # distances and updates in fp32
            return self._quantize(z.float())

    def _quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)  # (B·H·W, D)
        idx = self.nearest(flat.detach())
        q = self.codebook[idx]  # (B·H·W, D)
        if self.training and torch.is_grad_enabled():
            self._learn(flat.detach(), idx)
        per = lambda t: t.reshape(b, h * w * d).sum(1)  # noqa: E731  (B·H·W, D) -> (B,)
        codebook = per((flat.detach() - q).square()) if not self.ema else flat.new_zeros(b)
        commitment = per((flat - q.detach()).square())
        q = flat + (q - flat).detach()  # straight through: the decoder's gradient goes to z_e
        return q.reshape(b, h, w, d).permute(0, 3, 1, 2), idx.reshape(b, h, w), codebook, commitment

    @torch.no_grad()
    def _learn(self, flat: Tensor, idx: Tensor) -> None:
        """The EMA update (when on) and dead-code restarts, from one training batch."""
        counts = torch.bincount(idx, minlength=len(self.codebook)).to(flat.dtype)  # (K,)
        if self.ema:
            sums = torch.zeros_like(self.embed_sum).index_add_(0, idx, flat)  # (K, D)
            self.cluster_size.mul_(EMA_DECAY).add_(counts, alpha=1 - EMA_DECAY)
            self.embed_sum.mul_(EMA_DECAY).add_(sums, alpha=1 - EMA_DECAY)
            n = self.cluster_size.sum()
            smoothed = (self.cluster_size + 1e-5) / (n + len(counts) * 1e-5) * n  # Laplace
            self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))
        self.idle.add_(1).masked_fill_(counts > 0, 0)
        dead = torch.nonzero(self.idle >= RESTART_AFTER).flatten()
        if len(dead):
            pick = torch.randint(len(flat), (len(dead),), device=flat.device)
            self.codebook.data[dead] = flat[pick]
            if self.ema:
                self.embed_sum[dead], self.cluster_size[dead] = flat[pick], 1.0
            self.idle[dead] = 0


def grid_encoder(c: int, channels: list[int], dim: int) -> nn.Sequential:
    layers, last = [], c
    for ch in channels:  # each halves H and W
        layers += [nn.Conv2d(last, ch, 4, stride=2, padding=1), nn.ReLU()]
        last = ch
    return nn.Sequential(*layers, nn.Conv2d(last, dim, 1))


def grid_decoder(c: int, channels: list[int], dim: int) -> nn.Sequential:
    layers, chans = (
        [nn.Conv2d(dim, channels[-1], 3, padding=1), nn.ReLU()],
        list(reversed(channels)),
    )
    for a, b in zip(chans, [*chans[1:], None], strict=True):  # each doubles H and W
        layers.append(nn.ConvTranspose2d(a, b or c, 4, stride=2, padding=1))
        if b:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class VQVAE(LatentModel):
    """Encoder -> :class:`Quantizer` -> decoder, and the code prior; see the module doc."""

    discrete_codes = True
    """its codes are entries of a codebook (the explorer and 2-D plots have no map of them)"""

    def __init__(self, image_shape, channels: list[int], dim: int, entries: int, beta: float,
                 ema: bool, loss: str, prior: CodePriorConfig, classes: list[str]):  # fmt: skip
        super().__init__()
        c, h, w = image_shape
        if not channels or h % 2 ** len(channels) or w % 2 ** len(channels):
            raise ConfigError(f"vq_vae: model.channels {channels} halves {h}x{w} "
                              f"{len(channels)} times; give 1 or more channels that divide it")  # fmt: skip
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.grid = (h >> len(channels), w >> len(channels))
        self.encoder, self.decoder = grid_encoder(c, channels, dim), grid_decoder(c, channels, dim)
        self.quantizer = Quantizer(entries, dim, ema)
        self.beta, self.loss, self.dim = beta, loss, dim
        self.init_conditions(classes)
        length = self.grid[0] * self.grid[1]
        try:
            self.code_prior = CODE_PRIORS[prior.kind](prior, entries, length, len(classes))
        except ValueError as e:
            raise ConfigError(f"model.code_prior: {e}") from e
        self.freeze_after, self.frozen = prior.freeze_after, False
        self.prior = _CodesPrior(self)

    def begin_epoch(self, epoch: int, epochs: int) -> None:
        """The training loop's call before each epoch (0-based): from epoch ``freeze_after``
        on (when > 0) the autoencoder is frozen and only the prior learns."""
        self.frozen = 0 < self.freeze_after <= epoch

    def condition(self, y: Tensor | None) -> Tensor | None:
        return y if self.conditional else None  # the prior's start token: the label index

    # ---- the verbs
    def codes(self, x: Tensor) -> Tensor:
        """The code indices of images x: (B, C, H, W) -> (B, H'·W') long."""
        return self.quantizer(self.encoder(x))[1].flatten(1)

    def encode(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        """The quantised grid, flattened: (B, C, H, W) -> (B, D·H'·W')."""
        return self.quantizer(self.encoder(x))[0].flatten(1)

    def decode(self, z: Tensor, c: Tensor | None = None) -> Tensor:
        grid = z.reshape(-1, self.dim, *self.grid)  # (B, D·H'·W') -> (B, D, H', W')
        return torch.sigmoid(self.decoder(grid))  # (B, C, H, W) in [0, 1]

    def decode_codes(self, codes: Tensor) -> Tensor:
        """Images of code indices (B, H'·W')."""
        q = self.quantizer.codebook[codes]  # (B, T, D)
        return self.decode(q.transpose(1, 2).flatten(1))

    @torch.no_grad()
    def sample(self, n, labels=None, generator=None, temperature: float = 1.0) -> Tensor:
        """Codes drawn from the prior (by label for a conditional prior), decoded."""
        y, names = None, self.sample_labels(n, labels, generator)
        if names is not None:
            if unknown := [m for m in names if m not in self.classes]:
                raise ConfigError(
                    f"unknown label {unknown[0]!r} (labels: {', '.join(self.classes)})"
                )
            y = torch.tensor(
                [self.classes.index(m) for m in names], device=self.decoder[0].weight.device
            )
        return self.decode_codes(self.code_prior.sample(n, y, generator, temperature))

    # ---- the objective, per example
    def terms(self, x: Tensor, y: Tensor | None = None) -> dict[str, Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            q, idx, codebook, commitment = self.quantizer(self.encoder(x))
            logits = widened(self.decoder(q))  # (B, D, H', W') -> (B, C, H, W)
            pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
            rec = LOSSES[self.loss](pred, x)  # (B,)
        code_nll = -self.code_prior.log_prob(idx.flatten(1), self.condition(y))  # (B,)
        loss = rec + codebook + self.beta * commitment + code_nll
        return {"loss": loss, "reconstruction": rec, "codebook": codebook,
                "commitment": commitment, "code_nll": code_nll}  # fmt: skip


class _CodesPrior:
    """The code prior seen as a prior over the flattened quantised grids (what ``encode``
    returns): ``log_prob`` of a grid is that of its codes; for a conditional model the
    marginal log (1/C) Σ_y p(codes | y) over its C labels."""

    def __init__(self, model: VQVAE):
        self._model = [model]  # not a submodule: the model owns the prior's weights

    def log_prob(self, z: Tensor) -> Tensor:
        m = self._model[0]
        flat = z.reshape(len(z), m.dim, -1).transpose(1, 2).reshape(-1, m.dim)  # (B·T, D)
        codes = m.quantizer.nearest(flat).reshape(len(z), -1)  # (B, T)
        if not m.conditional:
            return m.code_prior.log_prob(codes)
        each = [m.code_prior.log_prob(codes, torch.full((len(z),), y, device=z.device))
                for y in range(len(m.classes))]  # fmt: skip
        return torch.logsumexp(torch.stack(each), dim=0) - math.log(len(m.classes))


def build(cfg, loss: str) -> VQVAE:
    """The VQ-VAE ``cfg`` describes, its reconstruction loss ``loss`` (train.loss)."""
    o = cfg.code_prior
    for key in ("layers", "width", "heads"):
        if getattr(o, key) < 1:
            raise ConfigError(f"model.code_prior.{key} must be >= 1, got {getattr(o, key)}")
    if o.freeze_after < 0:
        raise ConfigError(f"model.code_prior.freeze_after must be >= 0, got {o.freeze_after}")
    classes = cfg.classes if cfg.conditional else []
    if cfg.conditional and not classes:
        raise ConfigError("model.conditional needs a labelled data set (model.classes is empty)")
    return VQVAE(cfg.image_shape, cfg.channels, cfg.bottleneck, cfg.codebook, cfg.commitment,
                 cfg.ema, loss, o, classes)  # fmt: skip
