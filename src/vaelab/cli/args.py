"""Argument types and options several commands share."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from vaelab.errors import VaelabError


def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    """An argparse type: integers >= ``low``, anything else refused as not ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = _int_at_least(1, "a positive integer")


non_negative_int = _int_at_least(0, "an integer >= 0")


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def seed_int(text: str) -> int:
    """An argparse type: a seed, 0 <= seed < SEED_LIMIT."""
    from vaelab.config_checks import SEED_LIMIT

    value = non_negative_int(text)
    if value >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"must be below 2**63, got {text!r}")
    return value


Command = Callable[[argparse.Namespace], "int | None"]


def _cache_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache", metavar="DIR", help="cache folder (default: $VAELAB_CACHE or ~/.cache/vaelab)"
    )


def _force_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="replace splits (or a whole data set) the name already holds")  # fmt: skip


def _labels(text: str | None) -> list[str] | None:
    return None if not text else [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        values = tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError as e:
        raise VaelabError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if not values or not all(0 < v < math.inf for v in values):
        raise VaelabError(f"{what} must be finite numbers > 0, got {text!r}")
    return values


def _fuse_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--fuse", choices=("auto", "on", "off"), default="auto",
                   help=f"train {what} in one fused step: auto (default) = on an accelerator "
                        "only, where it pays; on a CPU it ran at 0.81-0.97x of one by one")  # fmt: skip
