"""The one extension point for model families: a :class:`Family` per ``model.kind``.

A family is a module with its model class and a builder, plus one :func:`register_family`
line (here for the built-in ones, anywhere for a plugin). Everything downstream asks the
model what it can do (:meth:`~vaelab.models.base.Model.can`); the registry only answers
what must be known before a model exists: which ``model.*`` keys the family reads, whether
it trains on labels, whether its runs can be fused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vaelab.config import ModelConfig
from vaelab.errors import ConfigError
from vaelab.memory import check_memory
from vaelab.models import ae, classifier, hierarchical, regularised, vae, vq

SHARED = ("kind", "arch", "widths", "channels", "bottleneck", "activation", "image_shape",
          "classes")  # fmt: skip
"""model.* keys every family reads; the others belong to the families that name them."""


@dataclass(frozen=True)
class Family:
    """How to build one family from a ``[model]`` config, and what it reads."""

    build: Callable[[ModelConfig, str], nn.Module]
    """(model config with image_shape filled in, train.loss) -> the model"""
    keys: tuple[str, ...] = ()
    """model.* keys beyond :data:`SHARED` that it reads (others set are refused)"""
    labels: Callable[[ModelConfig], bool] = lambda cfg: False
    """whether it trains on labels (then model.classes is filled in from the data)"""
    fusable: bool = True
    """whether runs of it may train in one fused, vmapped step"""
    distributable: bool = True
    """whether it may train on several processes (DDP): not when it learns outside the
    gradient (an EMA codebook) or leaves parameters without one in some epochs"""
    check: Callable[[ModelConfig], None] | None = None
    """its own rules on its keys, raising ConfigError (run before anything trains)"""


FAMILIES: dict[str, Family] = {}
"""model.kind -> its :class:`Family`."""


def register_family(name: str, build: Callable[[ModelConfig, str], nn.Module], **spec) -> Family:
    """Make ``model.kind = NAME`` train, evaluate, sample and plot as far as the model it
    builds can (``spec``: the other fields of :class:`Family`). Re-registering a name
    replaces it."""
    if not name.isidentifier():
        raise ValueError(f"a family name is an identifier, got {name!r}")
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    if unknown := [k for k in spec.get("keys", ()) if k not in fields]:
        raise ValueError(f"family {name!r} reads unknown model keys {unknown}")
    FAMILIES[name] = Family(build, **spec)
    return FAMILIES[name]


def family(cfg: ModelConfig) -> Family:
    """The family of ``cfg.kind``; an unknown kind is a ConfigError naming the known ones."""
    if cfg.kind not in FAMILIES:
        raise ConfigError(f"unknown model.kind {cfg.kind!r} (known: {', '.join(FAMILIES)})")
    return FAMILIES[cfg.kind]


def check_unused(cfg: ModelConfig) -> None:
    """A ConfigError for a model.* key set away from its default where the family would
    ignore it, then the family's own rules. Needs no image shape, so groups of runs check
    every config before any trains."""
    fam = family(cfg)
    default = ModelConfig()
    for f in dataclasses.fields(ModelConfig):
        key = f.name
        if key in SHARED or key in fam.keys or getattr(cfg, key) == getattr(default, key):
            continue
        readers = " or ".join(repr(n) for n, other in FAMILIES.items() if key in other.keys)
        raise ConfigError(f"model.{key} needs model.kind = {readers or '(none)'} (it is "
                          f"{cfg.kind!r})")  # fmt: skip
    if fam.check is not None:
        fam.check(cfg)


def build_model(cfg: ModelConfig, loss: str) -> nn.Module:
    """The model a config describes (``cfg.image_shape`` must be filled in)."""
    fam = family(cfg)
    check_unused(cfg)
    try:
        with torch.device("meta"):  # sizes only, no memory: bound the real build first
            n = sum(p.numel() for p in fam.build(cfg, loss).parameters())
        # weights, gradients and two optimizer moments in fp32
        check_memory(n, 16, "parameters", copies=1,
                     advice="use smaller model.widths / model.channels")  # fmt: skip
        return fam.build(cfg, loss)
    except ValueError as e:
        raise ConfigError(f"model: {e}") from e


def reads_labels(cfg: ModelConfig) -> bool:
    """Whether the family of ``cfg`` trains on labels."""
    return family(cfg).labels(cfg)


register_family("ae", ae.build, keys=("expost",))
register_family("vae", vae.build, check=vae.check, labels=lambda cfg: cfg.conditional,
                keys=("likelihood", "beta", "k", "warmup", "sigma", "learn_sigma", "conditional",
                      "prior", "posterior"))  # fmt: skip
register_family("rae", regularised.build_rae, fusable=False,  # gp: autograd.grad inside
                keys=("beta", "expost", "decoder_penalty", "penalty_weight"))  # fmt: skip
register_family("wae", regularised.build_wae, keys=("beta", "expost"))
register_family("vae2", hierarchical.build,
                keys=("likelihood", "k", "top_widths", "top_bottleneck", "ladder", "warmup"))  # fmt: skip
register_family("vq_vae", vq.build, fusable=False, distributable=False,  # codebook: see vq.py
                labels=lambda cfg: cfg.conditional,
                keys=("codebook", "commitment", "ema", "code_prior", "conditional"))  # fmt: skip
register_family("classifier", classifier.build, labels=lambda cfg: True)
