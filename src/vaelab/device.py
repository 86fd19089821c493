"""Devices and random streams: a device name checked to exist, a seeded block that gives the
caller's RNG states back, and the widest float a device sums in."""

from __future__ import annotations

import contextlib
import os
import platform
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


BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
"""CPU flags (Linux /proc/cpuinfo) under which bfloat16 matmuls run natively."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it, else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """CPU model and the flags speed depends on, cores, torch threads and version: what every
    timing is named with."""
    flags = sorted(cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"})
    return (
        f"{cpu_model()} ({', '.join(flags) or 'no AVX flags listed'}), {os.cpu_count()} "
        f"cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` multiplies bfloat16 natively: a CPU with AVX512-BF16 or AMX, a CUDA
    GPU with bf16 tensor cores (compute capability 8.0 on); else False (emulated: slower)."""
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in BF16_CPU_FLAGS)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    return False


AUTO_PRECISION_ENV = "VAELAB_AUTO_PRECISION"
"""An environment variable: "fp32" or "bf16" makes train.precision = "auto" choose that on
any machine (the test suite sets fp32, so that its exact comparisons do not depend on the
CPU it runs on)."""


def resolve_precision(precision: str, device: torch.device, warn=None) -> str:
    """train.precision for a new run on ``device``: "auto" becomes "bf16" where the device
    runs it natively and "fp32" elsewhere; an explicit "bf16" where it is emulated is kept,
    with one warning line through ``warn``."""
    if precision == "auto":
        forced = os.environ.get(AUTO_PRECISION_ENV, "")
        if forced in ("fp32", "bf16"):
            return forced
        return "bf16" if native_bf16(device) else "fp32"
    if precision == "bf16" and warn is not None and not native_bf16(device):
        what = "CPU" if device.type == "cpu" else str(device)
        warn(f"warning: bf16 is emulated on this {what}: expect several times slower than fp32 "
             '(train.precision = "auto" chooses by capability)')  # fmt: skip
    return precision
