"""Digital images as the thesis defines them (§1.3): pixels, normed images, quantisation,
flattening, image operators (convolution and pooling) and picture grids for figures.

An image batch is a tensor of shape (N, C, H, W): N images with C channels (Def 1.3.1,
1 = black and white, 3 = RGB, Remark 1.3.2) on a pixel domain of resolution (H, W)
(Def 1.3.3). Stored images are uint8 in Ψ = {0, …, 255}; networks see float32 in the
normed image domain Ψ' = Ψ/255 ⊂ [0, 1] (Def 1.3.5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = [
    "normalize",
    "quantize",
    "flatten",
    "unflatten",
    "make_grid",
    "save_png",
]


def normalize(u8: torch.Tensor) -> torch.Tensor:
    """Map uint8 pixels Ψ to the normed image domain Ψ' = Ψ/255 (Def 1.3.5), as float32."""
    if u8.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 pixels, got {u8.dtype}")
    return u8.to(torch.float32).div_(255.0)


def quantize(p: torch.Tensor) -> torch.Tensor:
    """Turn values p ∈ [0, 1] back into pixels ψ = ⌈255·p − 0.5⌉ (Lemma 1.3.6), as uint8.

    Network outputs overshoot, so p is clipped to [0, 1] first; NaN has no pixel value and
    raises ``ValueError``.
    """
    p = torch.as_tensor(p)
    if torch.isnan(p).any():
        raise ValueError("quantize got NaN values; they have no pixel value")
    p = p.to(torch.float64).clamp(0.0, 1.0)
    return torch.ceil(255.0 * p - 0.5).to(torch.uint8)


def flatten(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C·H·W), row-major as in Lemma 1.3.7."""
    if images.dim() != 4:
        raise ValueError(f"flatten expects (N, C, H, W), got shape {tuple(images.shape)}")
    return images.reshape(images.shape[0], -1)


def unflatten(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """(N, C·H·W) -> (N, C, H, W): the inverse of :func:`flatten` for image shape (C, H, W)."""
    c, h, w = shape
    if x.dim() != 2 or x.shape[1] != c * h * w:
        raise ValueError(f"cannot unflatten shape {tuple(x.shape)} into (N, {c}, {h}, {w})")
    return x.reshape(x.shape[0], c, h, w)


def make_grid(
    images: torch.Tensor, nrow: int = 8, padding: int = 2, pad_value: int = 255
) -> np.ndarray:
    """Tile a batch (N, C, H, W) — uint8, or float in [0, 1] — into one uint8 picture.

    Returns an (rows·(H+p)+p, nrow·(W+p)+p, C) array for :func:`save_png` or matplotlib.
    """
    if images.dim() != 4:
        raise ValueError(f"make_grid expects (N, C, H, W), got shape {tuple(images.shape)}")
    u8 = images if images.dtype == torch.uint8 else quantize(images.detach().cpu())
    u8 = u8.cpu()
    n, c, h, w = u8.shape
    ncol = max(1, min(nrow, n))
    nrows = max(1, -(-n // ncol))
    grid = torch.full(
        (c, nrows * (h + padding) + padding, ncol * (w + padding) + padding),
        pad_value,
        dtype=torch.uint8,
    )
    for i in range(n):
        r, col = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = u8[i]
    return grid.permute(1, 2, 0).numpy()  # (C, H', W') -> (H', W', C)


def save_png(path: str | Path, picture: np.ndarray) -> Path:
    """Write an (H, W) or (H, W, C) uint8 array as a PNG (grey for C = 1)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(picture)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path
