"""Autoencoders (Def 2.1.5) and VAEs (§3) with injectable encoder and decoder networks,
and the classifier that judges generated images; :mod:`vaelab.build` makes them from a
config.

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

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.errors import ConfigError
from vaelab.losses import LIKELIHOODS, LOSS_TAKES_LOGITS, LOSSES, kl_normal_std, normal_log_prob


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 if autocast left it in 16 bits: losses and the posterior's parameters
    are computed from fp32 network outputs (a sum over 784 pixels must not round at 8 bits;
    type promotion against an fp32 target would widen some losses anyway, but not e.g. the
    Bernoulli term's softplus, nor μ and log σ²); fp32 and fp64 pass unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


SIGMA_MIN = 1 / 255
"""The smallest learned σ of a Gaussian likelihood on [0, 1] images: one grey level."""


def condition_table(classes: list[str]) -> torch.Tensor:
    """Condition vectors (K, D) for class names. When every name is a digit string of one
    length L ("7", "427"), a name is coded digit by digit as L one-hots (D = 10·L), so a
    conditional model can be asked for numbers it never saw whole; otherwise it is a
    one-hot of the class (D = K)."""
    if digitwise(classes):
        return torch.stack([digit_code(c) for c in classes])
    return torch.eye(len(classes))


def digitwise(classes: list[str]) -> bool:
    """Whether class names are coded digit by digit: all digit strings of one length."""
    return (
        bool(classes)
        and len({len(c) for c in classes}) == 1
        and all(c.isascii() and c.isdigit() for c in classes)
    )


def digit_code(name: str) -> torch.Tensor:
    """'427' -> the concatenated one-hots of 4, 2 and 7, shape (10·len(name),)."""
    return F.one_hot(torch.tensor([int(ch) for ch in name]), 10).flatten().float()


class LatentModel(nn.Module):
    """The verbs every model shares, built on its ``encode`` and ``decode``.

    ``c`` is an optional condition (B, D) — label codes from :meth:`condition` — used only
    by conditional models."""

    classes: list[str] = []

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Condition vectors (B, D) for class indices y (B,); None for unconditional models."""
        return None

    def reconstruct(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x, c), c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(x)

    @torch.no_grad()
    def interpolate(
        self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 10, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Decode ``steps`` evenly spaced points on the line between the codes of two images
        x1, x2 (each (C, H, W) or (1, C, H, W)); returns (steps, C, H, W)."""
        z1 = self.encode(x1.reshape(1, *x1.shape[-3:]), c)
        z2 = self.encode(x2.reshape(1, *x2.shape[-3:]), c)
        t = torch.linspace(0, 1, steps, device=z1.device).unsqueeze(1)  # (steps, 1)
        cs = None if c is None else c.expand(steps, -1)
        return self.decode((1 - t) * z1 + t * z2, cs)  # (steps, Z) -> (steps, C, H, W)


class Autoencoder(LatentModel):
    """The autoencoding network f_a = f_d ∘ f_e of Def 2.1.5.

    ``encoder`` maps (B, C, H, W) to (B, n_b), ``decoder`` maps (B, n_b) to logits of shape
    (B, C, H, W); ``loss`` names a per-example reconstruction loss of :mod:`vaelab.losses`.
    :meth:`fit_prior` fits a Gaussian to the codes of a data set, after which
    :meth:`sample` generates from it (the "AE + Gaussian" baseline of generative models).
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, loss: str = "mse"):
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r} (known: {', '.join(LOSSES)})")
        self.encoder, self.decoder, self.loss = encoder, decoder, loss
        self.prior: tuple[torch.Tensor, torch.Tensor] | None = None  # (mean, Cholesky factor)

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, n_b)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.decoder(z))  # (B, n_b) -> (B, C, H, W) in [0, 1]

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example reconstruction loss L(ψ, f_a(ψ)) (Def 2.2.1), shape (B,)."""
        logits = widened(self.decoder(self.encode(x)))  # (B, C, H, W)
        pred = logits if LOSS_TAKES_LOGITS[self.loss] else torch.sigmoid(logits)
        return LOSSES[self.loss](pred, x)

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, batch: int = 4096) -> None:
        """Fit N(mean, cov) to the codes of images ``x`` (N, C, H, W) in [0, 1]."""
        z = torch.cat([self.encode(x[i : i + batch]) for i in range(0, len(x), batch)]).double()
        cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
        eye = torch.eye(z.shape[1], dtype=z.dtype, device=z.device)
        chol = torch.linalg.cholesky(cov + 1e-6 * eye)
        self.prior = (z.mean(0).float(), chol.float())

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels=None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Decode ``n`` draws from the Gaussian fitted by :meth:`fit_prior`."""
        if self.prior is None:
            raise ConfigError("an autoencoder samples only after fit_prior(images)")
        if labels is not None:
            raise ConfigError("an autoencoder cannot generate by label; train a conditional VAE")
        mean, chol = self.prior
        eps = temperature * torch.randn(n, len(mean), generator=generator).to(mean.device)
        return self.decode(mean + eps @ chol.T)


class VAE(LatentModel):
    """A variational autoencoder (§3): Gaussian encoder q(z | x) = N(μ(x), diag σ²(x)),
    prior p(z) = N(0, I), decoder likelihood p(x | z) chosen by name.

    ``encoder`` maps images to (B, 2·Z) = (μ, log σ²); ``decoder`` maps (B, Z) to logits
    (B, C, H, W). The per-example objective in nats is −ELBO = −E_q[log p(x | z)] + β·KL
    with one reparameterised sample (β ≠ 1 is the β-VAE), or with ``k`` > 1 the negative
    IWAE bound −log (1/k) Σ_i p(x, z_i)/q(z_i | x) (Burda et al. 2015), which has no β
    (β ≠ 1 with k > 1 is refused).

    With ``classes`` the model is conditional (a CVAE): the label's condition vector
    (:func:`condition_table`) is appended to the encoder's input — to the flattened image
    (``cond_mode="flat"``) or as constant image planes (``"planes"``) — and to the code z
    before decoding.
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
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown likelihood {likelihood!r} (known: {', '.join(LIKELIHOODS)})"
            )
        if k < 1:
            raise ConfigError(f"the number of importance samples k must be >= 1, got {k}")
        check_beta(beta, k)
        self.encoder, self.decoder, self.latent_dim = encoder, decoder, latent_dim
        self.likelihood, self.beta, self.k = likelihood, beta, k
        log_sigma = torch.full(tuple(image_shape or ()) if learn_sigma else (), math.log(sigma))
        self.learn_sigma = learn_sigma
        if learn_sigma:
            self.log_sigma = nn.Parameter(log_sigma)  # one σ per pixel, learned
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.classes, self.cond_mode = list(classes or []), cond_mode
        self.register_buffer("cond_table", condition_table(self.classes), persistent=False)

    # ---- conditioning
    @property
    def conditional(self) -> bool:
        return bool(self.classes)

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ConfigError("this conditional VAE needs labels (the data set has none)")
        return self.cond_table[y]  # (B,) -> (B, D)

    def condition_of(self, names: list[str]) -> torch.Tensor:
        """Condition vectors (N, D) for label names such as '7' or '427' — also numbers that
        are not training classes, when labels are coded digit by digit."""
        if not self.conditional:
            raise ConfigError(
                "labels need a conditional model (train with model.conditional = true)"
            )
        index = {c: i for i, c in enumerate(self.classes)}
        width = len(self.classes[0])
        by_digit = digitwise(self.classes)
        rows = []
        for name in names:
            if name in index:
                rows.append(self.cond_table[index[name]])
            elif by_digit and name.isascii() and name.isdigit() and len(name) == width:
                rows.append(digit_code(name).to(self.cond_table.device))
            else:
                raise ConfigError(
                    f"unknown label {name!r} (labels: {self.classes[0]!r} … {self.classes[-1]!r})"
                )
        return torch.stack(rows)

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
    def posterior(
        self, x: torch.Tensor, c: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x), each (B, Z)."""
        h = widened(self.encoder(self._with(x, c)))  # (B, 2Z)
        mu, logvar = h.chunk(2, dim=1)  # (B, 2Z) -> 2 x (B, Z)
        return mu, logvar

    def encode(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        return self.posterior(x, c)[0]  # the posterior mean μ(x), (B, Z)

    def decode(self, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        """E[x | z] in [0, 1], (B, C, H, W)."""
        return LIKELIHOODS[self.likelihood][1](self._decoder(z, c), self.sigma_in_use())

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: list[str] | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Decode ``n`` draws z ~ N(0, I) of the prior: new images (n, C, H, W) in [0, 1].
        A conditional model takes ``labels`` (one name, or n names); without them the
        labels are drawn uniformly from its classes. ``temperature`` < 1 draws z ~ N(0, T² I),
        trading variety for typical images (1 = the model's own prior)."""
        device = self.log_sigma.device
        c = None
        if self.conditional:
            if labels is None:
                pick = torch.randint(len(self.classes), (n,), generator=generator)
                labels = [self.classes[i] for i in pick]
            labels = labels * n if len(labels) == 1 else labels
            if len(labels) != n:
                raise ConfigError(f"{len(labels)} labels for {n} samples")
            c = self.condition_of(labels)
        elif labels is not None:
            raise ConfigError(
                "labels need a conditional model (train with model.conditional = true)"
            )
        z = temperature * torch.randn(n, self.latent_dim, generator=generator).to(device)  # (n, Z)
        return self.decode(z, c)

    # ---- the objectives, per example in nats
    def log_px(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for decoder outputs ``logits``, (B,)."""
        return LIKELIHOODS[self.likelihood][0](widened(logits), x, self.sigma_in_use())

    def sigma_in_use(self) -> torch.Tensor:
        """log σ of the Gaussian likelihood. A learned σ over [0, 1] images ("gaussian") is
        floored at one grey level (SIGMA_MIN = 1/255): a pixel that is blank in every image
        would otherwise shrink its σ, and raise the likelihood, without bound. The floor
        passes gradients straight through, so a σ pushed below it can come back."""
        if self.learn_sigma and self.likelihood == "gaussian":
            ls = self.log_sigma
            return ls + (ls.clamp_min(math.log(SIGMA_MIN)) - ls).detach()
        return self.log_sigma

    def elbo(
        self, x: torch.Tensor, beta: float = 1.0, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)) with one sample z = μ + σ·ε, (B,)."""
        mu, logvar = self.posterior(x, c)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # reparameterisation
        return self.log_px(self._decoder(z, c), x) - beta * kl_normal_std(mu, logvar)

    def log_weights(
        self, x: torch.Tensor, k: int, posterior=None, c: torch.Tensor | None = None
    ) -> torch.Tensor:
        """log w_i = log p(x | z_i) + log p(z_i) − log q(z_i | x) for k draws z_i ~ q(z | x),
        shape (B, k). ``posterior`` = (μ, log σ²) when already computed."""
        mu, logvar = self.posterior(x, c) if posterior is None else posterior
        b, zdim = mu.shape
        eps = torch.randn(b, k, zdim, device=mu.device, dtype=mu.dtype)  # (B, k, Z)
        z = mu.unsqueeze(1) + torch.exp(0.5 * logvar).unsqueeze(1) * eps  # (B, k, Z)
        zero = z.new_zeros(())
        # log q(z | x) = log N(ε; 0, I) − ½ Σ log σ², from ε itself: z − μ loses ε's digits
        # when σ ≪ |μ| (0.24 nats at log σ² = −24, μ = 3, Z = 32 in float32); same gradients
        log_q = normal_log_prob(eps, zero, zero) - 0.5 * logvar.sum(-1, keepdim=True)  # (B, k)
        log_p = normal_log_prob(z, zero, zero)  # the prior N(0, I), (B, k)
        ck = None if c is None else c.repeat_interleave(k, dim=0)  # (B·k, D)
        logits = self._decoder(z.reshape(b * k, zdim), ck)  # (B·k, Z) -> (B·k, C, H, W)
        xk = x.unsqueeze(1).expand(b, k, *x.shape[1:]).reshape(b * k, *x.shape[1:])
        log_px = self.log_px(logits, xk).reshape(b, k)  # (B, k)
        return log_px + log_p - log_q

    def iwae_bound(self, x: torch.Tensor, k: int, c: torch.Tensor | None = None) -> torch.Tensor:
        """log (1/k) Σ_i w_i, the k-sample importance-weighted bound (k = 1: the ELBO), (B,)."""
        return torch.logsumexp(self.log_weights(x, k, c=c), dim=1) - math.log(k)

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """−ELBO (β-weighted) for k = 1, else the negative IWAE bound; (B,) in nats."""
        c = self.condition(y)
        return -self.elbo(x, self.beta, c) if self.k == 1 else -self.iwae_bound(x, self.k, c)


class Classifier(nn.Module):
    """A small CNN (conv features of §1.3, then a dense head) that reads class labels; the
    judge of generated images. ``features`` is its penultimate layer (for Fréchet
    distances). Images wider than it was trained on are read slot by slot: a 28x84
    composite is three 28x28 digits (:meth:`read`)."""

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

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy −log p(y | x) per example, (B,) in nats."""
        if y is None:
            raise ConfigError("a classifier trains on a labelled data set")
        return F.cross_entropy(widened(self.logits(x)), y, reduction="none")

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


def check_beta(beta: float, k: int) -> None:
    """β ≠ 1 with k > 1 is a ConfigError: the IWAE bound has no KL term to weight."""
    if beta != 1 and k > 1:  # it would be silently ignored
        raise ConfigError(
            f"model.beta = {beta} weights the KL term of the ELBO (k = 1); the IWAE bound "
            f"(model.k = {k}) has no β: set one of them to 1"
        )
