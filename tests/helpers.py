"""Shared steps of the family tests (importable: pytest puts tests/ on sys.path)."""

from pathlib import Path

import torch

from vaelab import cli
from vaelab.files import read_tensors

TINY_MNIST = ["data.limit=500", "data.test_limit=100", "model.widths=[64]",
              "model.bottleneck=4", "train.batch_size=100"]  # fmt: skip
"""A model and data small enough for seconds of training on real MNIST."""


def trained_resumed_alike(config: str, sets: list[str], tmp_path: Path, cache: Path) -> Path:
    """Train ``config`` with ``--set``s 2 epochs straight, and 1 epoch then ``--resume`` to 2,
    through the CLI; assert the weights are equal bit for bit; returns the straight run."""
    args = [a for s in sets for a in ("--set", s)]
    opts = ["--cache", str(cache), "--no-progress"]
    base = ["train", config, *opts, *args]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert cli.main([*base, "--out", str(straight), "--set", "train.epochs=2"]) == 0
    assert cli.main([*base, "--out", str(cut), "--set", "train.epochs=1"]) == 0
    assert cli.main(["train", "--resume", str(cut), "--set", "train.epochs=2", *opts]) == 0
    a, b = (read_tensors(d / "model.safetensors")[0] for d in (straight, cut))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    return straight
