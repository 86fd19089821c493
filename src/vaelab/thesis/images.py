"""Digital images as the thesis defines them (§1.3): pixels, normed images, quantisation,
flattening, image operators (convolution and pooling) and picture grids for figures.

An image batch is a tensor of shape (N, C, H, W): N images with C channels (Def 1.3.1,
1 = black and white, 3 = RGB, Remark 1.3.2) on a pixel domain of resolution (H, W)
(Def 1.3.3). Stored images are uint8 in Ψ = {0, …, 255}; networks see float32 in the
normed image domain Ψ' = Ψ/255 ⊂ [0, 1] (Def 1.3.5).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vaelab.errors import is_count

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
    raises ``ValueError``, and so do integers (pixels already: clipping them to [0, 1]
    would make every one white).
    """
    p = torch.as_tensor(p)
    if not p.is_floating_point():
        raise ValueError(f"quantize expects values in [0, 1] as floats, got {p.dtype} "
                         "(uint8 pixels need no quantising)")  # fmt: skip
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
    if not is_count(nrow):
        raise ValueError(f"make_grid needs nrow ≥ 1 images per row, got {nrow!r}")
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
    """Write an (H, W) or (H, W, C) uint8 array as a PNG (grey for C = 1), atomically and
    under exactly the name ``path``."""
    from PIL import Image

    from vaelab.files import atomic_write

    arr = np.asarray(picture)
    if arr.dtype != np.uint8:  # a cast would truncate floats to black and wrap 256 to 0
        raise ValueError(f"save_png expects uint8 pixels, got {arr.dtype} (see quantize)")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    image = Image.fromarray(arr)
    return atomic_write(Path(path), lambda f: image.save(f, format="png"))


# --- Image operators (Def 1.3.8–1.3.13) -----------------------------------------------------
# Batches are (B, C, H, W) floats; H, W play the thesis's resolution (M, N). Windows run over
# the "valid" positions only (no padding), so a window p and stride s give ⌊(M − p)/s⌋ + 1
# outputs per axis — M − p + 1 for the thesis's s = 1.

__all__ += ["conv2d", "avg_pool", "min_pool", "max_pool", "POOLS", "ImageLayer"]


def _pair(value: int | tuple[int, int], what: str) -> tuple[int, int]:
    """An int or a pair of positive ints, as (p1, p2)."""
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or any(not is_count(v) for v in pair):
        raise ValueError(f"{what} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_images(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{what} expects a batch (B, C, H, W), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{what} expects float images (see normalize), got {x.dtype}")


def _check_window(x: torch.Tensor, window: tuple[int, int], what: str) -> None:
    h, w = x.shape[-2:]
    if window[0] > h or window[1] > w:
        raise ValueError(f"{what} window {window} is larger than the image ({h}, {w})")


def conv2d(x: torch.Tensor, kernel: torch.Tensor, stride: int = 1) -> torch.Tensor:
    """The image convolution operator T_conv of Def 1.3.10 (eq. 1.9), batched.

    (ψ_1)_ij = Σ_{m,n} (ψ_0)_{i+m, j+n} k_mn over the valid positions, indices from 0 here.
    Read literally, eq. 1.9's 1-based indices run one past the image (i = M₀ − s + 1 and
    m = s give M₀ + 1); the window meant, (ψ_0)_{i+m−1, j+n−1}, is the one computed, with
    M₁ = M₀ − s + 1 outputs as the definition says. This is a cross-correlation — the
    kernel is not flipped — which is exactly what ``F.conv2d`` computes, so it is used as is.
    Multi-channel: x (B, C_in, H, W), kernel (C_out, C_in, s1, s2), and every output channel
    sums over the input channels; a kernel (s1, s2) means C_in = C_out = 1. Output
    (B, C_out, ⌊(H − s1)/stride⌋ + 1, ⌊(W − s2)/stride⌋ + 1).
    """
    _check_images(x, "conv2d")
    if not isinstance(kernel, torch.Tensor) or kernel.dim() not in (2, 4):
        shape = tuple(kernel.shape) if isinstance(kernel, torch.Tensor) else type(kernel).__name__
        raise ValueError(f"conv2d kernel must be (C_out, C_in, s1, s2) or (s1, s2), got {shape}")
    k = kernel if kernel.dim() == 4 else kernel[None, None]  # (s1, s2) -> (1, 1, s1, s2)
    if k.shape[1] != x.shape[1]:
        raise ValueError(
            f"conv2d kernel has {k.shape[1]} input channels but the images have {x.shape[1]}"
        )
    _check_window(x, (k.shape[2], k.shape[3]), "conv2d")
    s = _pair(stride, "stride")
    return F.conv2d(x, k.to(x.dtype), stride=s)  # (B, C_in, H, W) -> (B, C_out, H', W')


def _windows(
    x: torch.Tensor, window: int | tuple[int, int], stride: int, what: str
) -> torch.Tensor:
    """All p1×p2 windows of x: (B, C, H, W) -> (B, C, p1·p2, H', W')."""
    _check_images(x, what)
    p = _pair(window, "window")
    s = _pair(stride, "stride")
    _check_window(x, p, what)
    b, c, h, w = x.shape
    h_out, w_out = (h - p[0]) // s[0] + 1, (w - p[1]) // s[1] + 1
    cols = F.unfold(x.reshape(b * c, 1, h, w), kernel_size=p, stride=s)  # (B·C, p1·p2, H'·W')
    return cols.reshape(b, c, p[0] * p[1], h_out, w_out)


POOLS = {
    "avg": lambda win: win.mean(dim=2),  # eq. 1.10: (1/(p1 p2)) Σ_{(m,n) ∈ I}
    "min": lambda win: win.amin(dim=2),  # eq. 1.11
    "max": lambda win: win.amax(dim=2),  # eq. 1.12
}
"""Pooling reductions over a window (Def 1.3.11–1.3.13), by name."""


def avg_pool(x: torch.Tensor, window: int | tuple[int, int], stride: int = 1) -> torch.Tensor:
    """Average pooling T_avg (Def 1.3.11, eq. 1.10) with pooling I = p1×p2 and stride s.

    Each output pixel is the mean of one window: (B, C, H, W) -> (B, C, H', W') with
    H' = ⌊(H − p1)/s⌋ + 1. Computed from the unfolded windows.
    """
    return POOLS["avg"](_windows(x, window, stride, "avg_pool"))


def min_pool(x: torch.Tensor, window: int | tuple[int, int], stride: int = 1) -> torch.Tensor:
    """Min pooling T_min (Def 1.3.12, eq. 1.11): the minimum of every window.

    Eq. 1.11 reads min over (ψ_0)_kl; like eq. 1.10 the window is shifted to (i, j).
    Equals −max_pool(−x).
    """
    return POOLS["min"](_windows(x, window, stride, "min_pool"))


def max_pool(x: torch.Tensor, window: int | tuple[int, int], stride: int = 1) -> torch.Tensor:
    """Max pooling T_max (Def 1.3.13, eq. 1.12): the maximum of every window."""
    return POOLS["max"](_windows(x, window, stride, "max_pool"))


class ImageLayer(nn.Module):
    """A neural layer on images H(ψ) = φ̂(Tψ + b) (Def 1.3.9).

    By default T is a learned convolution operator (Def 1.3.10) with kernel
    (out_channels, in_channels, s1, s2) (``kernel_size`` 3 and ``stride`` 1 unless given)
    and b one bias per output channel. Pass
    ``operator`` to use any other image operator (Def 1.3.8), e.g. a pooling; a module
    operator is registered, so its parameters train too. Unlike Def 1.3.8 a convolution
    may change the number of channels, as usual for multi-channel kernels.
    """

    def __init__(
        self,
        in_channels: int | None = None,
        out_channels: int | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        *,
        stride: int | tuple[int, int] | None = None,
        activation: str = "relu",
        alpha: float = 0.01,
        operator: Callable[[torch.Tensor], torch.Tensor] | None = None,
        bias: bool = True,
    ) -> None:
        from vaelab.thesis.nn import _activation_with_alpha

        super().__init__()
        if operator is not None and (in_channels, kernel_size, stride) != (None, None, None):
            # the operator decides its own windows: these would be silently ignored
            raise ValueError("in_channels, kernel_size and stride belong to the learned "
                             "convolution; an operator layer takes none of them")  # fmt: skip
        if operator is not None and not bias and out_channels is not None:
            raise ValueError("out_channels of an operator layer counts its biases: "
                             "with bias=False it takes none")  # fmt: skip
        self.stride = _pair(1 if stride is None else stride, "stride")
        self.kernel: nn.Parameter | None = None
        self.operator = operator
        if operator is None:
            for name, value in (("in_channels", in_channels), ("out_channels", out_channels)):
                if not is_count(value):
                    raise ValueError(f"{name} must be a positive integer, got {value!r}")
            s1, s2 = _pair(3 if kernel_size is None else kernel_size, "kernel_size")
            self.kernel = nn.Parameter(torch.empty(out_channels, in_channels, s1, s2))
            nn.init.kaiming_uniform_(self.kernel, a=5**0.5)  # the nn.Conv2d default
        elif not callable(operator):
            raise ValueError(f"operator must be callable, got {type(operator).__name__}")
        if bias:
            if isinstance(out_channels, bool) or not isinstance(out_channels, int):
                raise ValueError(f"a bias needs out_channels, got {out_channels!r}")
            fan_in = self.kernel[0].numel() if self.kernel is not None else 1
            self.bias = nn.Parameter(torch.empty(out_channels).uniform_(-1, 1) / fan_in**0.5)
        else:
            self.register_parameter("bias", None)
        self.activation = _activation_with_alpha(activation, alpha)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            t = conv2d(x, self.kernel, self.stride)  # (B, C_in, H, W) -> (B, C_out, H', W')
        else:
            t = self.operator(x)
            if self.bias is not None and (t.dim() != 4 or t.shape[1] != self.bias.numel()):
                raise ValueError(f"the operator gave shape {tuple(t.shape)}, not (B, "
                                 f"{self.bias.numel()}, H', W') for the layer's "
                                 f"{self.bias.numel()} biases (out_channels)")  # fmt: skip
        if self.bias is not None:
            t = t + self.bias.view(1, -1, 1, 1)  # (C_out,) broadcast over (B, ·, H', W')
        return self.activation(t)
