"""The IDX file format (MNIST, Fashion-MNIST, KMNIST, EMNIST): magic 0x0000 TT DD, DD
big-endian int32 dimensions, then the data; read plain or gzip-compressed, written
atomically."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from vaelab.errors import DataError
from vaelab.files import atomic_write

_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder(">") if dt.itemsize > 1 else dt: c for c, dt in _IDX_DTYPES.items()}


def parse_idx(data: bytes, where: str = "<bytes>") -> np.ndarray:
    """Parse the bytes of an IDX file (magic 0x0000 TT DD, DD big-endian int32 dims, data)."""
    if len(data) < 4:
        raise DataError(f"{where}: too short for an IDX header ({len(data)} bytes)")
    if data[0] != 0 or data[1] != 0:
        raise DataError(f"{where}: wrong IDX magic {data[:4].hex()} (must start with 0000)")
    type_code, ndim = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise DataError(f"{where}: unknown IDX data type 0x{type_code:02x}")
    if ndim == 0:
        raise DataError(f"{where}: IDX file with zero dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{where}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"{where}: dimensions {dims} need {expected} bytes but the file has {len(data)}"
            + (" (truncated)" if len(data) < expected else " (trailing bytes)")
        )
    arr = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed (by content, not by name)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    return parse_idx(raw, str(path))


def write_idx(path: str | Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz)."""
    path = Path(path)
    arr = np.asarray(array)
    big = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    if big not in _IDX_CODES:
        raise DataError(f"{path}: IDX cannot store dtype {arr.dtype}")
    header = bytes([0, 0, _IDX_CODES[big], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(big).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    return atomic_write(path, lambda f: f.write(payload))
