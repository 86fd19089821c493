"""Seeded mini-batches from resident tensors, and the splits a run trains and tests on."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import torch

from vaelab.config_checks import BINARIZE
from vaelab.data.cache import load_dataset
from vaelab.data.dataset import ImageDataset
from vaelab.errors import DataError
from vaelab.thesis.images import normalize

# --------------------------------------------------------------------------------------
# Batching from resident tensors
# --------------------------------------------------------------------------------------


class Batches:
    """Seeded mini-batches from a resident :class:`ImageDataset`.

    Each epoch draws one random permutation and slices it (every index exactly once per
    epoch; the last, smaller batch is kept unless ``drop_last``). Images come out as float32
    (B, C, H, W) in [0, 1] on ``device``; with ``binarize="dynamic"`` every batch is a fresh
    Bernoulli draw of the grey values, with ``"static"`` one draw fixed at construction.
    The split stays resident as uint8 (a quarter of float32's memory and of the bytes a
    batch gathers) and each batch is normalised as it is sliced.

    ``shard`` = (rank, world size): in training on several processes every process draws
    the same permutation and noise and takes its consecutive share of each (global) batch
    of ``batch_size``, so the data order does not depend on the process count;
    :attr:`global_len` is the size of the whole batch last given.
    """

    def __init__(
        self,
        data: ImageDataset,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        binarize: str = "none",
        drop_last: bool = False,
        device: str | torch.device = "cpu",
        shard: tuple[int, int] = (0, 1),
    ):
        if binarize not in BINARIZE:
            raise DataError(f"binarize must be one of {BINARIZE}, got {binarize!r}")
        if batch_size < 1:
            raise DataError(f"batch_size must be positive, got {batch_size}")
        if len(data) == 0:
            raise DataError(f"data set {data.name!r} is empty")
        self.data, self.batch_size, self.shuffle = data, batch_size, shuffle
        self.binarize, self.drop_last, self.device = binarize, drop_last, torch.device(device)
        self.rank, self.world_size = shard
        self.global_len = 0
        # independent streams: permutations (on the CPU), dynamic and static binarisation
        self.generator = torch.Generator().manual_seed(derive_seed(seed, "order"))
        self.noise = torch.Generator(device=self.device).manual_seed(derive_seed(seed, "noise"))
        pixels = data.images  # (N, C, H, W) uint8
        if binarize == "static":
            g = torch.Generator().manual_seed(derive_seed(seed, "static"))
            pixels = torch.bernoulli(normalize(pixels), generator=g).to(torch.uint8) * 255
        self.pixels = pixels.to(self.device)
        self.labels = None if data.labels is None else data.labels.to(self.device)
        self._epoch_start = self.generator.get_state()

    @property
    def images(self) -> torch.Tensor:
        """All images as the batches give them (static binarisation applied), float32."""
        return normalize(self.pixels)

    def __len__(self) -> int:
        n, b = len(self.data), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        return self.epoch()

    def epoch(self, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """One epoch of batches, leaving out the first ``skip`` (to resume mid-epoch)."""
        self._epoch_start = self.generator.get_state()
        n = len(self.data)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for i in range(skip, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]  # the global batch
            n = self.global_len = len(idx)
            mine = slice(n * self.rank // self.world_size, n * (self.rank + 1) // self.world_size)
            x = normalize(self.pixels[idx[mine]])  # (B, C, H, W) uint8 -> float32 in [0, 1]
            if self.binarize == "dynamic":  # drawn for the global batch, then this share
                u = torch.rand((n, *x.shape[1:]), generator=self.noise, device=self.device)
                x = (u[mine] < x).to(x.dtype)  # Bernoulli(x), resampled every batch
            yield x, (None if self.labels is None else self.labels[idx[mine]])

    def state_dict(self, mid_epoch: bool = False) -> dict:
        """Generator states, so a resumed run draws the same batches. With ``mid_epoch`` the
        permutation generator is the one from the start of the current epoch, so that
        ``epoch(skip=done)`` after loading draws the same order again."""
        perm = self._epoch_start if mid_epoch else self.generator.get_state()
        return {"generator": perm, "noise": self.noise.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.noise.set_state(state["noise"])
        self._epoch_start = self.generator.get_state()


def derive_seed(seed: int, stream: str) -> int:
    """A seed for the random stream named ``stream`` (e.g. "order", "noise") of run seed
    ``seed``: a hash of both, so no two (seed, stream) pairs share a seed."""
    digest = hashlib.sha256(f"vaelab:{stream}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def heldout_batches(
    data: ImageDataset,
    binarize: str,
    batch_size: int = 2048,
    device: str | torch.device = "cpu",
    shard: tuple[int, int] = (0, 1),
) -> Batches:
    """Fixed-order batches of a held-out split for a run that trains with ``binarize``: the
    images are binarised once, with the same seed for every run, unless it is "none"."""
    fixed = "none" if binarize == "none" else "static"
    return Batches(data, batch_size, shuffle=False, seed=0, binarize=fixed, device=device,
                   shard=shard)  # fmt: skip


def keep_classes(ds: ImageDataset, only: list[str] | tuple[str, ...]) -> ImageDataset:
    """The images of ``ds`` labelled with one of the class names ``only``; the class list
    (what a label index means) stays the data set's."""
    if ds.labels is None:
        raise DataError(f"data.only_classes needs labels; {ds.name!r} has none")
    if unknown := [c for c in only if c not in ds.classes]:
        raise DataError(f"data.only_classes: {ds.name!r} has no class {unknown[0]!r} "
                        f"(classes: {', '.join(ds.classes)})")  # fmt: skip
    keep = torch.isin(ds.labels, torch.tensor([ds.classes.index(c) for c in only]))
    return ds.subset(torch.nonzero(keep).flatten())


def load_split(
    name: str,
    split: str,
    cache: str | Path | None = None,
    limit: int = 0,
    image_shape: list[int] | tuple[int, ...] | None = None,
    only: list[str] | tuple[str, ...] = (),
) -> ImageDataset:
    """The first ``limit`` examples (0 = all) of a split — of its images of the classes
    ``only`` when given (``data.only_classes``); with ``image_shape`` (C, H, W) given, a
    split of other images is a DataError."""
    ds = load_dataset(name, split, cache)
    ds = (keep_classes(ds, only) if only else ds).limit(limit)
    if image_shape and tuple(ds.image_shape) != tuple(image_shape):
        shown = "x".join(map(str, image_shape))
        raise DataError(
            f"data set {name!r} split {split!r} holds {'x'.join(map(str, ds.image_shape))} "
            f"images, but the model takes {shown}"
        )
    return ds
