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
    """The interface of a stage (see the module's docstring)."""

    name: str = ""
    label: str = ""
    """How tables name a model sampled through this stage (e.g. "ae+gaussian")."""

    def fit(self, model, data: StageData) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def load(self, model, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError
