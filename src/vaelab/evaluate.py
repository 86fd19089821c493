"""Evaluation of trained models on a data split."""

from __future__ import annotations

import torch

from vaelab.data import Batches


@torch.no_grad()
def mean_objective(model: torch.nn.Module, batches: Batches, seed: int = 0) -> float:
    """The model's objective averaged over every example of ``batches`` (the empirical risk,
    Def 1.2.4). Any sampling inside the objective uses a private, seeded RNG stream, so the
    number is reproducible and the caller's RNG state is left untouched."""
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for x, _ in batches:
            total += model.objective(x).sum().double().cpu()  # (B,) -> ()
    model.train(was_training)
    return float(total) / len(batches.data)
