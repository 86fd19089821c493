"""Devices and random streams: a device name checked to exist, a seeded block that gives the
caller's RNG states back, and the widest float a device sums in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vaelab.errors import ConfigError


def resolve_device(name: str, key: str = "train.device") -> torch.device:
    """The torch device called ``name``, checked to exist here; a ConfigError names ``key``."""
    try:
        device = torch.device(name)
        torch.empty(0, device=device)  # unknown names, torch built without it, no such GPU
    except (RuntimeError, AssertionError, ValueError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{key} = {name!r} is not available here ({reason})") from e
    return device


def wide_float(device: torch.device) -> torch.dtype:
    """float64 where the device has it (mps has not): for sums over many terms."""
    return torch.float32 if device.type == "mps" else torch.float64


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device = "cpu") -> Iterator[None]:
    """Run the block with torch's CPU RNG — and for a CUDA or MPS ``device`` that device's
    RNG — seeded to ``seed``; the caller's RNG states come back afterwards."""
    device = torch.device(device)
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        with torch.random.fork_rng(devices=[index], device_type="cuda"), torch.cuda.device(index):
            torch.random.default_generator.manual_seed(seed)
            torch.cuda.manual_seed(seed)
            yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(seed)
        if device.type != "mps":
            yield
            return
        state = torch.mps.get_rng_state()  # fork_rng has no mps branch in every torch ≥ 2.3
        torch.mps.manual_seed(seed)
        try:
            yield
        finally:
            torch.mps.set_rng_state(state)
