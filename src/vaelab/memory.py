"""Bounds before allocation: a count a user gives (``-n``, ``--per-label``, ``--n``, an image
size) is turned into bytes and refused, in one line, when the machine cannot hold them."""

from __future__ import annotations

from vaelab.errors import VaelabError


def available_memory() -> int | None:
    """Bytes of memory free for new allocations (Linux: MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_memory(
    n: int, each: int, what: str = "images", copies: int = 2, advice: str = "ask for fewer"
) -> None:
    """Refuse to hold ``n`` items of ``each`` bytes ``copies`` times (a result and the
    pieces it is assembled from) when that exceeds the memory available, naming both."""
    need, free = copies * n * each, available_memory()
    if free is not None and need > free:
        raise VaelabError(f"{n:,} {what} of {each:,} bytes need about {need / 2**30:.1f} GiB in "
                          f"memory, {free / 2**30:.1f} GiB are available: {advice}")  # fmt: skip
