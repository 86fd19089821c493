"""Range rules for config values: one table, checked after a config is read
(:func:`validate`); each broken rule is a one-line ConfigError naming its key."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from vaelab.errors import ConfigError

if TYPE_CHECKING:
    from vaelab.config import Config

BINARIZE = ("none", "dynamic", "static")
"""data.binarize values: none, dynamic (a fresh Bernoulli draw per batch), static (once)."""


def _at_least(low: float) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v >= low), f">= {low}"


SEED_LIMIT = 2**63
"""Seeds are 0 <= seed < 2**63, so that a seed plus an offset still fits torch's 64 bits."""

PRECISIONS = ("auto", "fp32", "bf16")
"""train.precision values."""

_POSITIVE_LIST = ((lambda v: all(w >= 1 for w in v)), "a list of positive integers")

CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "data.limit": _at_least(0),
    "data.test_limit": _at_least(0),
    "data.binarize": ((lambda v: v in BINARIZE), f"one of {', '.join(BINARIZE)}"),
    "model.widths": _POSITIVE_LIST,
    "model.channels": _POSITIVE_LIST,
    "model.bottleneck": _at_least(1),
    "model.k": _at_least(1),
    "model.warmup": _at_least(0),
    "model.top_widths": _POSITIVE_LIST,
    "model.top_bottleneck": _at_least(1),
    "model.codebook": _at_least(2),
    "model.commitment": ((lambda v: 0 <= v < math.inf), "a finite number >= 0"),
    "model.sigma": ((lambda v: 0 < v < math.inf), "a finite number > 0"),
    "model.beta": ((lambda v: 0 <= v < math.inf), "a finite number >= 0"),
    "model.penalty_weight": ((lambda v: 0 <= v < math.inf), "a finite number >= 0"),
    "train.epochs": _at_least(1),
    "train.seed": ((lambda v: 0 <= v < SEED_LIMIT), "an integer 0 <= seed < 2**63"),
    "train.batch_size": _at_least(1),
    "train.lr": ((lambda v: 0 <= v < math.inf), "a finite number >= 0"),
    "train.lr_decay": ((lambda v: 0 < v < math.inf), "a finite number > 0"),
    "train.threads": _at_least(0),
    "train.tensorboard_images": _at_least(0),
    "train.precision": ((lambda v: v in PRECISIONS), f"one of {', '.join(PRECISIONS)}"),
    "train.checkpoint_every": _at_least(1),
    "train.early_stopping": _at_least(0),
    "train.test_every": _at_least(1),
}
"""Range checks per ``section.key``: (test of the value, the rule in words)."""


def validate(cfg: Config) -> None:
    """Check the values of ``cfg`` against :data:`CHECKS`; a ConfigError names the key."""
    for key, (ok, rule) in CHECKS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not ok(value):
            raise ConfigError(f"{key} must be {rule}, got {value!r}")
    if cfg.data.split == cfg.data.test_split:
        raise ConfigError(
            f"data.split and data.test_split are both {cfg.data.split!r}: the test loss must "
            "come from held-out images"
        )
