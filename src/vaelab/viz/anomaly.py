"""Figures of anomaly scores: the most and least anomalous images with their scores, and
ROC curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vaelab.eval.anomaly import roc_curve
from vaelab.viz.figures import _save, _show, plt


def extremes_figure(out: str | Path, images: torch.Tensor, scores: np.ndarray, title: str,
                    n: int = 12) -> Path:  # fmt: skip
    """The ``n`` least anomalous images (top row) and the ``n`` most (bottom row) of
    ``images`` (N, C, H, W) uint8 by ``scores`` (N,), each with its score above it."""
    order = np.argsort(scores, kind="stable")
    n = min(n, len(order))
    fig, axes = plt.subplots(2, n, figsize=(1.05 * n, 2.9), squeeze=False)
    for row, picks, what in ((0, order[:n], "least"), (1, order[::-1][:n], "most")):
        for ax, i in zip(axes[row], picks, strict=True):
            _show(ax, images[int(i)].permute(1, 2, 0).numpy())  # (H, W, C) uint8
            ax.set_title(f"{scores[i]:.4g}", fontsize=7)
            ax.set_axis_off()
        axes[row][0].text(-0.15, 0.5, what, transform=axes[row][0].transAxes, rotation=90,
                          ha="right", va="center", fontsize=8)  # fmt: skip
    fig.suptitle(f"{title}: least (top) and most (bottom) anomalous", fontsize=9)
    return _save(fig, out)


def roc_figure(out: str | Path, curves: list[tuple[str, np.ndarray, np.ndarray]],
               title: str) -> Path:  # fmt: skip
    """One ROC curve per (label, normal scores, anomalous scores), with the chance line."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for label, normal, anomalous in curves:
        fpr, tpr = roc_curve(normal, anomalous)
        ax.plot(fpr, tpr, lw=1.2, label=label)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
    ax.set_xlabel("false-positive rate (normal images flagged)")
    ax.set_ylabel("true-positive rate (anomalies flagged)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, out)
