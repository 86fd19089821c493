"""The typed options of the ``[model.*]`` sub-tables (``[model.prior]``,
``[model.posterior]``, ``[model.expost]``, ``[model.code_prior]``): one dataclass per kind,
in :data:`PARTS`, which families extend with :func:`register_part`. Imported by
:mod:`vaelab.config` (which re-exports them) and by the models, never the other way."""

from __future__ import annotations

import typing
from dataclasses import dataclass


@dataclass
class PriorConfig:
    kind: str = "normal"
    """the prior p(z) of a VAE: normal (N(0, I)), mog (a learned mixture of Gaussians),
    vamp (the VampPrior: a mixture of the posteriors of learned pseudo-inputs)"""


@dataclass
class PosteriorConfig:
    kind: str = "gaussian"
    """the posterior q(z | x) of a VAE: gaussian (diagonal, from μ and log σ²), iaf (that
    Gaussian followed by inverse autoregressive flow steps)"""


@dataclass
class ExPostConfig:
    kind: str = "gmm"
    """the density an autoencoder's codes get after training: gmm (a Gaussian mixture)"""
    components: int = 1
    """mixture components k (1 with a full covariance: the Gaussian of "AE + Gaussian")"""
    covariance: str = "full"
    """full or diag covariance per component"""


@dataclass
class CodePriorConfig:
    kind: str = "transformer"
    """the prior over a VQ-VAE's codes: transformer (causal, over the grid in raster order)"""
    layers: int = 2
    """transformer blocks"""
    width: int = 64
    """model width (divisible by heads)"""
    heads: int = 4
    """attention heads"""
    freeze_after: int = 0
    """from this many epochs on, the VQ-VAE is frozen and the prior alone learns, on its
    fixed codes (0: never; before that the prior learns beside it, the codes' gradient
    stopped)"""


PARTS: dict[str, dict[str, type]] = {
    "prior": {"normal": PriorConfig},
    "posterior": {"gaussian": PosteriorConfig},
    "expost": {"gmm": ExPostConfig},
    "code_prior": {"transformer": CodePriorConfig},
}
"""model sub-tables ([model.prior], [model.posterior]) -> their kinds -> each kind's typed
options (a dataclass whose ``kind`` defaults to that kind); see :func:`register_part`."""


def register_part(table: str, kind: str, options: type) -> None:
    """Make ``[model.TABLE] kind = KIND`` valid, with the fields of the dataclass ``options``
    as its keys (``kind`` first, defaulting to ``kind``)."""
    if typing.get_type_hints(options).get("kind") is not str or options().kind != kind:
        raise ValueError(f"{options.__name__} needs a field kind: str = {kind!r}")
    PARTS.setdefault(table, {})[kind] = options
