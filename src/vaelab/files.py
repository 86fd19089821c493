"""The leaf every other module may import: atomic file writes, hashes, and safetensors read
and written with a clear refusal of anything else (never pickle). It imports nothing of
vaelab but :mod:`vaelab.errors`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import math
import os
import secrets
import stat
import struct
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vaelab.errors import CheckpointError


def _temporary_beside(path: Path) -> tuple[int, Path]:
    """A new file beside ``path``, opened for writing, created with mode 0o666 so that the
    kernel applies the umask as it does for ``open`` (``mkstemp`` would make it 0o600)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def remove_stale_temporaries(folder: Path, name: str = "*") -> None:
    """Remove the temporary files :func:`atomic_write` left in ``folder`` for files named
    ``name`` when it was killed mid-write. Only for a caller that holds the folder (or
    entry) so that nobody can be writing them now."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write(path: Path, write) -> Path:
    """Call ``write(file_object)`` into a temporary file beside ``path``, then rename it into
    place, so an interrupted write never leaves a half-written ``path``. The file gets the
    permissions ``open`` would give it: an existing file's (less setuid/setgid/sticky), else
    0o666 less the umask. A folder at ``path``, or an OS error while writing, is an error
    naming ``path``."""
    if path.is_dir():
        raise IsADirectoryError(21, "is a folder: give a file name", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _temporary_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            if os.name == "posix":  # keep an existing file's mode
                with contextlib.suppress(OSError):  # none yet, or no modes (vfat, CIFS)
                    os.fchmod(f.fileno(), stat.S_IMODE(path.stat().st_mode) & 0o777)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"{e.strerror} (writing {path})") from e
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_safetensors_bytes(raw: bytes, where: Path) -> None:
    """Refuse bytes that are not a safetensors file (8-byte header length, then JSON).

    The shape check comes first: a valid header length can itself begin with the byte
    0x80 or the letters "PK" (a 2,176-byte header does), so the magic bytes of pickle and
    zip only name the problem once the bytes are known not to be safetensors."""
    if len(raw) >= 10:
        (n,) = struct.unpack("<Q", raw[:8])
        if n <= len(raw) - 8 and raw[8:9] == b"{":
            return
    if raw[:1] == b"\x80" or raw[:2] == b"PK":
        raise CheckpointError(
            f"{where} is a pickle/torch.save file, not safetensors; refusing to load it"
        )
    if len(raw) < 10:
        raise CheckpointError(f"{where} is too short to be a safetensors file")
    raise CheckpointError(f"{where} is not a safetensors file (bad header)")


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    """(tensors, metadata, sha256) of a safetensors file, refusing anything else."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as e:
        raise CheckpointError(f"{path} is missing") from e
    check_safetensors_bytes(raw, path)
    try:
        tensors = st_load(raw)
        (n,) = struct.unpack("<Q", raw[:8])
        meta = json.loads(raw[8 : 8 + n]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from e
    return tensors, meta, hashlib.sha256(raw).hexdigest()


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str] | None = None
) -> str:
    """Write a safetensors file atomically; returns its sha256."""
    cpu = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    raw = st_save(cpu, metadata=meta)
    atomic_write(path, lambda f: f.write(raw))
    return hashlib.sha256(raw).hexdigest()


def encode_bytes(t: torch.Tensor) -> str:
    """A uint8 tensor (an RNG state) as base64 text for JSON."""
    return base64.b64encode(t.numpy().tobytes()).decode()


def decode_bytes(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def finite_or_none(x: float) -> float | None:
    """JSON has no inf/nan: map them to null."""
    return x if math.isfinite(x) else None
