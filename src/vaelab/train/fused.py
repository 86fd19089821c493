"""Several same-shaped models trained in one fused step.

A hyper-parameter sweep, or the thesis's reproduction (the same autoencoder under Adam
and under AMSGrad), trains models that differ only in their optimizer. :class:`Fused`
stacks their parameters along a new leading dimension, M models deep, and runs the
objective of all M at once with ``torch.func.vmap`` over ``functional_call``: one batched
matmul per layer instead of M small ones, one backward pass, one Python loop.

Each model keeps its own ``nn.Module``, whose parameters become views into the stacked
tensors, and its own optimizer over those parameters; after the fused backward pass each
model's ``.grad`` is a view into the stacked gradient. So optimizers, checkpoints and run
folders see M ordinary models. For deterministic objectives (autoencoders, classifiers)
each model's numbers equal those of training it alone, up to the summation order of
batched matmuls (tests/test_fused.py compares them); a VAE's ε is drawn per model inside
the vmap, so fused VAEs train alike in distribution but not draw for draw.

Fusing ties each model's parameters to the stacked tensors: moving a fused model to another
device or dtype, or loading weights with ``assign=True``, would cut that tie. The trainer
fuses after building, restoring and placing the models, and never does either afterwards.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Fused"]


class ObjectiveModule(nn.Module):
    """Calls ``model.objective``, so that ``functional_call`` can run it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.model.objective(x, y)


class Fused:
    """M same-shaped models whose objectives run as one vmapped computation.

    ``objective(x, y)`` returns the per-example losses of every model, shape (M, B), for one
    batch shared by all; ``backward(losses)`` fills each model's ``.grad``. Random draws
    inside the objectives (a VAE's ε) differ between models (``randomness="different"``).
    """

    def __init__(self, models: list[nn.Module]):
        if len(models) < 2:
            raise ValueError(f"fusing needs at least 2 models, got {len(models)}")
        shapes = [{n: tuple(p.shape) for n, p in m.named_parameters()} for m in models]
        if any(s != shapes[0] for s in shapes):
            raise ValueError("fused models must have the same parameter names and shapes")
        buffers = [dict(m.named_buffers()) for m in models]
        if any(b.keys() != buffers[0].keys() for b in buffers) or not all(
            torch.equal(b[n], buffers[0][n]) for b in buffers for n in b
        ):  # the first model's buffers (a fixed σ, a condition table) serve all
            raise ValueError("fused models must have equal buffers")
        self.models = models
        self._template = ObjectiveModule(models[0])
        # (M, *shape) leaves; every model's parameter becomes a view of one slice
        self.stacked = {
            n: torch.stack([dict(m.named_parameters())[n].detach() for m in models])
            for n in shapes[0]
        }
        for t in self.stacked.values():
            t.requires_grad_(True)
        for i, m in enumerate(models):
            for n, p in m.named_parameters():
                p.data = self.stacked[n].detach()[i]
        self._vmapped = torch.func.vmap(self._one, in_dims=(0, None, None), randomness="different")

    def _one(self, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
        named = {f"model.{n}": t for n, t in params.items()}
        return torch.func.functional_call(self._template, named, (x, y))  # (B,)

    def objective(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per-example losses of every model on one batch: (B, …) -> (M, B)."""
        return self._vmapped(self.stacked, x, y)

    def backward(self, losses: torch.Tensor) -> None:
        """Back-propagate each model's mean loss (the models share no parameters, so the sum
        over models gives each its own gradient) and hand each model its gradients; like
        ``zero_grad`` + ``backward``, it replaces earlier gradients, never accumulates."""
        for t in self.stacked.values():
            t.grad = None
        losses.mean(dim=1).sum().backward()  # (M, B) -> (M,) -> ()
        for i, m in enumerate(self.models):
            for n, p in m.named_parameters():
                g = self.stacked[n].grad  # None where the objective does not use p
                p.grad = None if g is None else g[i]
