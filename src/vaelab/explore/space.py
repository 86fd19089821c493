"""The latent space the explorer shows: a run's model, the codes of its test split, and the
plane they are drawn in (the codes themselves when they have 2 dimensions, else their first
two principal components). No HTTP here: the server validates requests and calls these."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from vaelab.errors import VaelabError


@dataclass(frozen=True)
class Projection:
    """An affine map of codes (Z,) onto the plane: ``(z - mean) @ basis``; the basis has
    orthonormal columns, so ``offset @ basis.T`` takes a plane offset back into code space."""

    mean: torch.Tensor  # (Z,) float64
    basis: torch.Tensor  # (Z, 2) float64
    explained: tuple[float, float] | None
    """The share of the codes' variance along each axis (PCA); None when nothing is projected."""

    @property
    def kind(self) -> str:
        return "identity" if self.explained is None else "pca"

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """Plane points (B, 2) float64 of codes (B, Z)."""
        return (z.double() - self.mean) @ self.basis  # (B, Z) @ (Z, 2) -> (B, 2)

    def unproject(self, offset: torch.Tensor) -> torch.Tensor:
        """The code-space offset (Z,) float64 of a plane offset (2,)."""
        return self.basis @ offset.double()  # (Z, 2) @ (2,) -> (Z,)


def fit_projection(codes: torch.Tensor) -> Projection:
    """The plane of codes (N, Z): the identity for Z = 2 (Z = 1 lies on the x axis), else the
    principal components of the codes, computed in float64 from their covariance (each axis
    signed so that its largest entry is positive, so the picture does not flip run to run)."""
    z = codes.shape[1]
    if z <= 2:
        basis = torch.eye(z, 2, dtype=torch.float64)  # (Z, 2)
        return Projection(torch.zeros(z, dtype=torch.float64), basis, None)
    x = codes.double()  # (N, Z)
    mean = x.mean(0)  # (Z,)
    centred = x - mean  # (N, Z)
    cov = centred.T @ centred / len(x)  # (Z, Z)
    values, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues, (Z,), (Z, Z)
    top = vectors[:, [-1, -2]]  # (Z, 2): the two directions of largest variance
    signs = torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True)))  # (1, 2)
    top = top * torch.where(signs == 0, 1.0, signs)
    total = float(values.clamp(min=0).sum())
    shares = [float(v.clamp(min=0)) / total if total > 0 else 0.0 for v in values[[-1, -2]]]
    return Projection(mean, top, (shares[0], shares[1]))


def grey(images: torch.Tensor) -> torch.Tensor:
    """Grey values 0-255 (B, C, H, W) uint8 of images in [0, 1]."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def pixel_list(image: torch.Tensor) -> list[int]:
    """One uint8 image (C, H, W) as a flat list, row-major with channels last (H, W, C)."""
    return image.permute(1, 2, 0).reshape(-1).tolist()  # (C, H, W) -> (H * W * C,)


class LatentSpace:
    """A model that encodes and decodes, the codes of its test images and their plane.
    Calls into the model hold a lock: the server answers requests on several threads."""

    def __init__(
        self,
        model: torch.nn.Module,
        codes: torch.Tensor,
        pixels: torch.Tensor,
        labels: torch.Tensor | None,
        classes: list[str],
        name: str,
        family: str,
    ):
        self.model = model
        self.codes = codes  # (N, Z) float32: the model's codes of the test images
        self.pixels = pixels  # (N, C, H, W) uint8: the images as they were encoded
        self.labels = labels  # (N,) int64 class indices, or None
        self.classes, self.name, self.family = list(classes), name, family
        self.projection = fit_projection(codes)
        self.points = self.projection.project(codes)  # (N, 2) float64
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.codes.shape[1]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape[1:])

    @property
    def conditions(self) -> list[str]:
        """The labels a conditional model decodes with (indices into this list); else []."""
        return list(self.model.classes) if getattr(self.model, "conditional", False) else []

    def _condition(self, label: int | None, n: int) -> torch.Tensor | None:
        if not self.conditions:
            return None
        return self.model.condition(torch.full((n,), int(label), dtype=torch.long))  # (n, D)

    def decode(self, z: torch.Tensor, label: int | None = None) -> torch.Tensor:
        """Grey images (B, C, H, W) uint8 of codes (B, Z), decoded by the model."""
        with self._lock, torch.no_grad():
            return grey(self.model.decode(z.float(), self._condition(label, len(z))))

    def encode(self, image: torch.Tensor, label: int | None = None) -> torch.Tensor:
        """The model's code (Z,) float32 of one image (C, H, W) in [0, 1]."""
        with self._lock, torch.no_grad():
            return self.model.encode(image[None].float(), self._condition(label, 1))[0]

    def label_of(self, index: int) -> int | None:
        return None if self.labels is None else int(self.labels[index])

    def lift(self, point: torch.Tensor) -> tuple[torch.Tensor, int]:
        """A full code (Z,) float64 for a plane point (2,): the nearest test code, moved by the
        plane offset mapped back through the projection (its off-plane parts stay); and the
        index of that nearest code."""
        nearest = int(((self.points - point.double()) ** 2).sum(1).argmin())  # (N, 2) -> ()
        offset = point.double() - self.points[nearest]  # (2,)
        return self.codes[nearest].double() + self.projection.unproject(offset), nearest

    def ranges(self) -> list[list[float]]:
        """A slider range [low, high] per code dimension: the codes' span, widened a quarter."""
        low, high = self.codes.min(0).values.double(), self.codes.max(0).values.double()  # (Z,)
        pad = (high - low).clamp(min=1e-3) / 4
        return torch.stack([low - pad, high + pad], 1).tolist()  # (Z, 2)


def load_space(run: str | Path, cache: str | Path | None = None, limit: int = 0) -> LatentSpace:
    """The latent space of run folder ``run``: its model (which must encode and decode to
    continuous codes) and the codes of the first ``limit`` images of its test split (0: all)."""
    from vaelab.runs.load import load_run, load_test_batches
    from vaelab.viz.figures import encode_dataset

    cfg, model = load_run(run)
    if not (model.can("encode") and model.can("decode")):
        raise VaelabError(f"{run} holds a {cfg.model.kind}, which does not encode and decode "
                          "images: there is no latent space to explore")  # fmt: skip
    if getattr(model, "discrete_codes", False):
        raise VaelabError(f"{run} holds a {cfg.model.kind}, whose codes are entries of a codebook: "
                          "there is no continuous space to explore (`vaelab sample RUN` draws "
                          "from its code prior)")  # fmt: skip
    batches = load_test_batches(cfg, cache, limit)
    with torch.no_grad():
        codes = encode_dataset(model, batches)  # (N, Z)
    if codes.ndim != 2 or not codes.is_floating_point():
        raise VaelabError(f"{run}: the {cfg.model.kind}'s codes are not vectors of real numbers "
                          f"(shape {tuple(codes.shape)}, {codes.dtype}); nothing to explore")  # fmt: skip
    if not torch.isfinite(codes).all():
        raise VaelabError(f"{run}: the model encodes some test images to NaN or infinity")
    return LatentSpace(model, codes.float(), batches.pixels.cpu(), batches.labels,
                       batches.data.classes, Path(run).name, cfg.model.kind)  # fmt: skip
