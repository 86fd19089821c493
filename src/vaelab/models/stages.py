"""Stages: what a family fits after its network is trained — an ex-post density over the
codes, later a prior over discrete codes or an anomaly threshold.

A stage has a ``name`` (its file in the run folder is ``stage-NAME.safetensors``, hashed in
``state.json`` under "stages"), ``fit(model, data) -> tensors`` and ``load(model, tensors)``.
``vaelab train`` runs a model's stages after the last epoch (and on ``--resume`` of a
finished run whose stages are missing); ``vaelab stage RUN`` runs them on their own. The
runner is :func:`vaelab.runs.stages.run_stages`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass
class StageData:
    """What a stage may read: the training images as the model trained on them (binarised
    once when it trained on binarised images), up to a stage's own limit."""

    train_images: Callable[[int], torch.Tensor]
    """``train_images(limit)``: the first ``limit`` training images (N, C, H, W) in [0, 1]."""


class Stage:
    """The interface of a stage (see the module's docstring). ``label`` names a model
    sampled through it in tables (e.g. "ae+gaussian")."""

    name = ""
    label = ""

    def fit(self, model, data: StageData) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load(self, model, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError


@torch.no_grad()
def encode_all(model, x: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    """The codes (N, Z) of images ``x`` (N, C, H, W), encoded ``batch`` at a time."""
    return torch.cat([model.encode(x[i : i + batch]) for i in range(0, len(x), batch)])


@dataclass(frozen=True, kw_only=True)
class ExPost(Stage):
    """An ex-post density over the codes as a stage: encode (up to ``images``) training
    images, ``fit(codes) -> tensors`` of the density's parameters, and on loading
    ``model.prior = prior(**tensors)``; the model then samples from it."""

    name: str
    fit_codes: Callable[[torch.Tensor], dict[str, torch.Tensor]]
    prior: Callable[..., torch.nn.Module]
    label: str = ""
    images: int = 20000

    def fit(self, model, data: StageData) -> dict[str, torch.Tensor]:
        """Fitted on the CPU whatever the model's device (the same numbers everywhere; mps
        has no float64)."""
        codes = encode_all(model, data.train_images(self.images)).cpu()  # (N, Z)
        tensors = self.fit_codes(codes)
        self.load(model, tensors)
        return tensors

    def load(self, model, tensors: dict[str, torch.Tensor]) -> None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model.prior = self.prior(**{k: v.to(device) for k, v in tensors.items()})
