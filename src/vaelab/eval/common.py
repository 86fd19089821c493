"""What every evaluation shares: a model in eval mode for a block, and the mean of its
objective (or of every term of it) over a split, with sampling on a private seeded stream."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from vaelab.data.batches import Batches
from vaelab.device import seeded


@contextlib.contextmanager
def evaluating(model: torch.nn.Module) -> Iterator[None]:
    """The block runs with ``model`` in eval mode; its train/eval mode comes back after,
    also after an error. Parts that can keep work while the weights stay fixed (a
    ``held()`` context, e.g. the VampPrior's pass over its pseudo-inputs) are held."""
    was_training = model.training
    model.eval()
    try:
        with contextlib.ExitStack() as stack:
            for part in model.modules():
                if callable(getattr(part, "held", None)):
                    stack.enter_context(part.held())
            yield
    finally:
        model.train(was_training)


@torch.no_grad()
def mean_objective(model: torch.nn.Module, batches: Batches, seed: int = 0) -> float:
    """The model's objective averaged over every example of ``batches`` (the empirical risk,
    Def 1.2.4). Any sampling inside the objective uses a private, seeded RNG stream, so the
    number is reproducible and the caller's RNG state is left untouched."""
    total = torch.zeros((), dtype=torch.float64)
    with evaluating(model), seeded(seed, batches.device):
        for x, y in batches:
            total += model.objective(x, y).sum().cpu().double()  # (B,) -> ()
    return float(total) / len(batches.data)


@torch.no_grad()
def sum_terms(
    model: torch.nn.Module, batches: Batches, seed: int = 0
) -> tuple[dict[str, torch.Tensor], int]:
    """Every term of the model's objective (``model.terms``: "loss" and its parts) summed
    over the examples ``batches`` gives (float64 on the CPU), and how many there were; with
    the RNG of :func:`mean_objective`."""
    totals: dict[str, torch.Tensor] = {}
    n = 0
    with evaluating(model), seeded(seed, batches.device):
        for x, y in batches:
            if not len(x):  # this process's share of a small last batch can be empty
                continue
            for key, value in model.terms(x, y).items():
                total = totals.setdefault(key, torch.zeros((), dtype=torch.float64))
                total += value.sum().cpu().double()  # (B,) -> ()
            n += len(x)
    return totals, n


def mean_terms(model: torch.nn.Module, batches: Batches, seed: int = 0) -> dict[str, float]:
    """Every term of the model's objective averaged over every example of ``batches``."""
    totals, _ = sum_terms(model, batches, seed)
    return {key: float(total) / len(batches.data) for key, total in totals.items()}
