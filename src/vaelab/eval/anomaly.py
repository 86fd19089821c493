"""Anomaly scores: how unlikely a trained model finds each image (higher = more anomalous),
asked of the model by capability, and the ROC measures that judge them.

Score kinds (:data:`SCORES`), each where the model can:

- ``mse``: reconstruction error, mean squared per pixel (models that encode and decode);
- ``bce``: reconstruction cross-entropy summed over pixels, in nats (the same);
- ``relative``: the reconstruction error relative to the image's energy, ‖x̂ − x‖² / ‖x‖²
  (the same): a faint, simple image (a thin 1) no longer scores as normal merely because it
  has few pixels to get wrong;
- ``neg_elbo``: −ELBO with one sample, in nats (models with a likelihood);
- ``nll``: importance-sampled −log p(x) with k samples (the evaluator's estimate);
- ``latent``: −log p(z) of the image's code under the model's prior (or the density fitted
  to its codes), in nats (models that sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vaelab.data.batches import Batches
from vaelab.device import seeded
from vaelab.errors import VaelabError
from vaelab.eval.common import evaluating
from vaelab.eval.likelihood import log_likelihood


@dataclass(frozen=True)
class Score:
    needs: tuple[str, ...]
    """the verbs the model must have (:meth:`Model.can`)"""
    fn: Callable[..., torch.Tensor]
    """(model, x, c, k, memo) -> (B,) score, higher = more anomalous; ``memo`` is shared by
    the kinds scored on one batch"""
    unit: str


def _recon(model, x, c, memo: dict):
    """The reconstruction of batch x (B, C, H, W), computed once for all kinds that use it."""
    if "recon" not in memo:
        memo["recon"] = model.reconstruct(x, c).clamp(1e-6, 1 - 1e-6)
    return memo["recon"]


SCORES: dict[str, Score] = {
    "mse": Score(
        ("encode", "decode"),
        lambda m, x, c, k, memo: (_recon(m, x, c, memo) - x).square().flatten(1).mean(1),
        "per pixel",
    ),
    "bce": Score(
        ("encode", "decode"),
        lambda m, x, c, k, memo: (
            F.binary_cross_entropy(_recon(m, x, c, memo), x, reduction="none").flatten(1).sum(1)
        ),
        "nats",
    ),
    "relative": Score(
        ("encode", "decode"),
        lambda m, x, c, k, memo: (
            (_recon(m, x, c, memo) - x).square().flatten(1).sum(1)
            / x.square().flatten(1).sum(1).clamp_min(1e-12)
        ),
        "ratio",
    ),
    "neg_elbo": Score(("log_weights",), lambda m, x, c, k, memo: -m.elbo(x, c=c), "nats"),
    "nll": Score(("log_weights",), lambda m, x, c, k, memo: -log_likelihood(m, x, k, c), "nats"),
    "latent": Score(
        ("encode", "sample"), lambda m, x, c, k, memo: -m.prior.log_prob(m.encode(x, c)), "nats"
    ),
}


def score_kinds(model) -> list[str]:
    """The score kinds ``model`` supports, in :data:`SCORES` order."""
    return [name for name, s in SCORES.items() if all(model.can(v) for v in s.needs)]


def check_kinds(model, kinds: list[str]) -> None:
    """A one-line error for a score kind that is unknown or that ``model`` cannot give."""
    known = score_kinds(model)
    for kind in kinds:
        if kind not in SCORES:
            raise VaelabError(f"unknown score kind {kind!r} (known: {', '.join(SCORES)})")
        if kind not in known:
            raise VaelabError(f"score kind {kind!r} needs what this model lacks (it has: "
                              f"{', '.join(known) or 'none'})")  # fmt: skip


@torch.no_grad()
def score_images(model, batches: Batches, kinds: list[str], k: int = 1000, seed: int = 0,
                 progress: bool = True) -> dict[str, np.ndarray]:  # fmt: skip
    """Each kind's score of every image of ``batches`` (in order), float64 arrays (N,).
    A conditional model is given each image's label."""
    check_kinds(model, kinds)
    out: dict[str, list[torch.Tensor]] = {kind: [] for kind in kinds}
    with evaluating(model), seeded(seed, batches.device):
        bar = tqdm(total=len(batches.data), desc="scoring", unit="img", leave=False,
                   disable=None if progress else True)  # fmt: skip
        for x, y in batches:
            c, memo = model.condition(y), {}
            for kind in kinds:
                out[kind].append(SCORES[kind].fn(model, x, c, k, memo).double().cpu())
            bar.update(len(x))
        bar.close()
    return {kind: torch.cat(v).numpy() for kind, v in out.items()}


def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """The probability that an anomalous image scores higher than a normal one, ties
    counting half (the Mann-Whitney U statistic over n·m), by ranks: O((n + m) log(n + m))."""
    n, m = len(normal), len(anomalous)
    if n == 0 or m == 0:
        raise VaelabError("AUROC needs normal and anomalous images")
    values, inverse, counts = np.unique(np.concatenate([normal, anomalous]),
                                        return_inverse=True, return_counts=True)  # fmt: skip
    average = np.cumsum(counts) - (counts - 1) / 2  # each distinct value's mean rank (1-based)
    u = average[inverse[n:]].sum() - m * (m + 1) / 2
    return float(u / (n * m))


def fpr_at_tpr(normal: np.ndarray, anomalous: np.ndarray, tpr: float = 0.95) -> float:
    """The false-positive rate on normal images at the lowest threshold that flags at least
    ``tpr`` of the anomalous ones (an image is flagged when its score ≥ the threshold)."""
    if not 0 < tpr <= 1:
        raise VaelabError(f"tpr must be in (0, 1], got {tpr}")
    need = math.ceil(tpr * len(anomalous) - 1e-9)
    threshold = np.sort(anomalous)[::-1][need - 1]
    return float((normal >= threshold).mean())


def roc_curve(normal: np.ndarray, anomalous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve: (FPR, TPR) at every distinct threshold t, an image flagged when its
    score ≥ t, from (0, 0) (nothing flagged) to (1, 1); tied scores make one diagonal step,
    so the area under it (trapezoids) is :func:`auroc` with ties counting half."""
    values = np.unique(np.concatenate([normal, anomalous]))[::-1]  # thresholds, high to low
    fpr = np.searchsorted(np.sort(-normal), -values, side="right") / max(len(normal), 1)
    tpr = np.searchsorted(np.sort(-anomalous), -values, side="right") / max(len(anomalous), 1)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])
