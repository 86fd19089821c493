"""What every model speaks, so that evaluation, sampling, plots and the CLI ask a model what
it can do (:meth:`Model.can`) and never which family it is.

The protocol (all per example, batch first; ``c`` an optional condition (B, D)):

- ``objective(x, y)``: the training loss (B,) in nats, reduced once by the trainer;
  ``terms(x, y)``: its parts, a dict of (B,) tensors that always holds ``"loss"`` (= the
  objective, computed once); the trainer logs the test-set mean of each
- ``encode(x, c)``: images (B, C, H, W) in [0, 1] -> codes (B, Z); ``decode(z, c)``: codes ->
  images in [0, 1]
- ``sample(n, labels, generator, temperature)``: new images, where the model has a prior
- ``log_weights(x, k, posterior, c)``: log p(x, z_i) − log q(z_i | x) for k draws, (B, k),
  with ``posterior(x, c)`` and ``elbo(x, c=c)``: the importance-sampled likelihood
- ``read(x)``: class indices of images (a classifier)
- ``stages``: what is fitted after training (:mod:`vaelab.models.stages`)

Decoders end in logits (no output activation); ``decode`` maps them to pixels, and losses
that work from logits get the logits directly.
"""

from __future__ import annotations

import torch
from torch import nn

from vaelab.errors import ConfigError
from vaelab.models.conditions import condition_table, digit_code, digitwise

VERBS = ("encode", "decode", "sample", "log_weights", "read", "codes")
"""The verbs :meth:`Model.can` answers for."""


def widened(t: torch.Tensor) -> torch.Tensor:
    """``t`` in fp32 if autocast left it in 16 bits: losses and the posterior's parameters
    are computed from fp32 network outputs (a sum over 784 pixels must not round at 8 bits;
    type promotion against an fp32 target would widen some losses anyway, but not e.g. the
    Bernoulli term's softplus, nor μ and log σ²); fp32 and fp64 pass unchanged."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


class Model(nn.Module):
    """The root of every vaelab model: the protocol's defaults and :meth:`can`."""

    classes: list[str] = []
    stages: tuple = ()
    """Stages fitted after training, in order (:class:`~vaelab.models.stages.Stage`)."""
    discrete_likelihood: bool = False
    """Whether ``log_weights`` is a probability of discrete pixels (bits/dim exist)."""

    def can(self, verb: str) -> bool:
        """Whether this model does ``verb`` (one of :data:`VERBS`): it has that method, and
        for ``sample`` it has a prior now (an ex-post one once its stage is loaded)."""
        if verb not in VERBS:
            raise ValueError(f"unknown verb {verb!r} (known: {', '.join(VERBS)})")
        if verb == "sample" and getattr(self, "prior", None) is None:
            return False
        return callable(getattr(self, verb, None))

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """The per-example loss (B,): ``terms(x, y)["loss"]`` unless a family defines it."""
        if type(self).terms is Model.terms:
            raise NotImplementedError(f"{type(self).__name__} defines neither objective nor terms")
        return self.terms(x, y)["loss"]

    def terms(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The objective and its parts, each (B,); ``{"loss": objective}`` unless a family
        defines more."""
        if type(self).objective is Model.objective:
            raise NotImplementedError(f"{type(self).__name__} defines neither objective nor terms")
        return {"loss": self.objective(x, y)}

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """Condition vectors (B, D) for class indices y (B,); None for unconditional models."""
        return None


class LatentModel(Model):
    """A model with codes: encode, decode, reconstruct, interpolate, and sampling through its
    ``prior`` (None until it has one). With ``classes`` it is conditional: the label's
    condition vector (:func:`condition_table`) goes with x and z (see the subclass).
    A subclass sets ``self.prior`` (a :class:`~vaelab.models.priors.Prior`, or None until a
    stage fits one)."""

    def init_conditions(self, classes: list[str] | None) -> None:
        self.classes = list(classes or [])
        self.register_buffer("cond_table", condition_table(self.classes), persistent=False)

    @property
    def conditional(self) -> bool:
        return bool(self.classes)

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if not self.conditional:
            return None
        if y is None:
            raise ConfigError(f"this conditional {type(self).__name__} needs labels (the data set "
                              "has none)")  # fmt: skip
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
                hint = ""
                if by_digit and name.isascii() and name.isdigit() and len(name) < width:
                    hint = f"; did you mean {name.zfill(width)!r}?"
                raise ConfigError(f"unknown label {name!r} (labels: {self.classes[0]!r} … "
                                  f"{self.classes[-1]!r}){hint}")  # fmt: skip
        return torch.stack(rows)

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

    @torch.no_grad()
    def sample(
        self,
        n: int,
        labels: list[str] | None = None,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Decode ``n`` draws z of the prior: new images (n, C, H, W) in [0, 1]. A
        conditional model takes ``labels`` (one name, or n names); without them the labels
        are drawn uniformly from its classes. ``temperature`` < 1 narrows the prior's spread
        (z ~ N(0, T² I) for the normal prior), trading variety for typical images."""
        if getattr(self, "prior", None) is None:
            raise ConfigError("this model samples only once its prior is fitted (its stage)")
        labels = self.sample_labels(n, labels, generator)
        c = None if labels is None else self.condition_of(labels)
        z = self.prior.sample(n, generator, temperature)  # (n, Z)
        return self.decode(z, c)

    def sample_labels(self, n: int, labels: list[str] | None, generator=None) -> list[str] | None:
        """The n label names samples are drawn for: ``labels`` (one name, or n), or drawn
        uniformly from the classes; None for an unconditional model (which takes none)."""
        if not self.conditional:
            if labels is not None:
                raise ConfigError(
                    "labels need a conditional model (train with model.conditional = true)"
                )
            return None
        if labels is None:
            pick = torch.randint(len(self.classes), (n,), generator=generator)
            labels = [self.classes[i] for i in pick]
        labels = labels * n if len(labels) == 1 else labels
        if len(labels) != n:
            raise ConfigError(f"{len(labels)} labels for {n} samples")
        return labels
