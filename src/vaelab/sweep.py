"""``--sweep section.key=v1,v2``: the values of each swept key, and one run (a folder name
and its ``--set`` overrides) per combination."""

from __future__ import annotations

import tomllib
from typing import Any

from vaelab.config import key_type, not_toml, toml_value
from vaelab.errors import ConfigError


def parse_sweep(text: str) -> tuple[str, list[Any]]:
    """'train.lr=1e-3,3e-4' -> ('train.lr', [0.001, 0.0003]); values are TOML (lists too:
    'model.widths=[64],[128,64]'), bare words strings ('train.optimizer=adam,amsgrad')."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ConfigError(f"sweep {text!r} must look like section.key=value1,value2,...")
    path, raw = (part.strip() for part in text.split("=", 1))
    hint = key_type(path)
    words = [w.strip() for w in raw.split(",")]
    try:
        values = tomllib.loads(f"v = [{raw}]")["v"]
    except tomllib.TOMLDecodeError:
        if hint not in (str, None):  # name the value that is not TOML, not the first one
            for w in words:
                try:
                    tomllib.loads(f"v = {w}")
                except tomllib.TOMLDecodeError:
                    raise not_toml(f"sweep {path}", w, hint) from None
            raise not_toml(f"sweep {path}", raw, None) from None
        values = words
    if hint is str:  # bare words, as in --set: data.name=2024,2025
        values = [v if isinstance(v, str) else toml_value(v) for v in values]
    if not values or any(v == "" for v in values):
        raise ConfigError(f"sweep {text!r} has an empty value")
    return path, values


def sweep_overrides(sweeps: list[str]) -> list[tuple[str, list[str]]]:
    """Every combination of the ``--sweep`` values: (a folder name such as
    'optimizer=adam,lr=0.001', the overrides 'train.optimizer="adam"', …) per run."""
    import itertools

    axes = [parse_sweep(t) for t in sweeps]
    runs = []
    for combo in itertools.product(*(values for _, values in axes)):
        pairs = [(path, v) for (path, _), v in zip(axes, combo, strict=True)]
        name = ",".join(f"{p.split('.', 1)[1]}={v}" for p, v in pairs)
        runs.append((name.replace(" ", "").replace("/", "_"), [f"{p}={toml_value(v)}" for p, v in pairs]))  # fmt: skip
    names = [n for n, _ in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"sweep values repeat: {', '.join(twice)}")
    return runs
