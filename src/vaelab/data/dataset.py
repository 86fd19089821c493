"""The data set type: images (N, C, H, W) uint8 in memory, with optional labels and class names."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from vaelab.errors import DataError

# --------------------------------------------------------------------------------------
# The data set type
# --------------------------------------------------------------------------------------


@dataclass
class ImageDataset:
    """Images (N, C, H, W) uint8 with optional labels (N,) int64 and class names."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise DataError(
                f"data set {self.name!r}: images must be uint8 (N, C, H, W), got "
                f"{self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels is not None:
            if self.labels.shape != (len(self.images),):
                raise DataError(
                    f"data set {self.name!r}: {len(self.images)} images but labels of shape "
                    f"{tuple(self.labels.shape)}"
                )
            self.labels = self.labels.to(torch.int64)
            if len(self.labels) and int(self.labels.min()) < 0:
                raise DataError(
                    f"data set {self.name!r}: labels must be >= 0, got {int(self.labels.min())}"
                )
            if self.classes and len(self.labels) and int(self.labels.max()) >= len(self.classes):
                raise DataError(
                    f"data set {self.name!r}: label {int(self.labels.max())} but only "
                    f"{len(self.classes)} class names"
                )

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, index: slice | torch.Tensor) -> ImageDataset:
        """The examples at ``index`` (a slice or an index tensor)."""
        labels = None if self.labels is None else self.labels[index]
        return ImageDataset(self.images[index], labels, list(self.classes), self.name)

    def limit(self, n: int | None) -> ImageDataset:
        """The first ``n`` examples (all of them for ``None`` or 0)."""
        return self if not n or n >= len(self) else self.subset(slice(0, n))

    def class_counts(self) -> list[int]:
        """Examples per class index 0..K-1 (empty without labels)."""
        if self.labels is None:
            return []
        k = max(len(self.classes), int(self.labels.max()) + 1 if len(self.labels) else 0)
        return torch.bincount(self.labels, minlength=k).tolist()
