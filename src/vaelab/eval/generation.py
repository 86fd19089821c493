"""Judging generated images.

- :func:`generation_metrics`: a trained classifier as the judge — generated-label accuracy,
  Fréchet distance in its penultimate features, precision and recall in them (k-NN
  manifolds, :mod:`.manifolds`), entropy of predicted classes, a classifier-based Inception
  score, and the distance to the nearest training image.
- :func:`reference`: the real training images a judge compares against, read once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.data.batches import load_split
from vaelab.errors import VaelabError
from vaelab.eval.manifolds import K, knn_radii, precision_recall
from vaelab.generate import generate, load_generator
from vaelab.models.classifier import Classifier
from vaelab.models.conditions import digitwise
from vaelab.runs.load import load_run
from vaelab.thesis.images import normalize

# --------------------------------------------------------------------------------------
# Judging generated images with a classifier
# --------------------------------------------------------------------------------------


@torch.no_grad()
def _features_and_probs(clf: Classifier, x: torch.Tensor, batch: int = 2000):
    """Penultimate features (N, F) and class probabilities (N, K) of single-slot images."""
    feats, probs = [], []
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        f = clf.features(xb)
        feats.append(f.double())
        probs.append(torch.softmax(clf.head(f), 1).double())
    return torch.cat(feats), torch.cat(probs)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}) between Gaussians fitted to
    feature sets a (N, F) and b (M, F) (the FID formula)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    f = a.shape[1]  # torch.cov of one feature is 0-d: keep (F, F)
    cov_a, cov_b = torch.cov(a.T).reshape(f, f), torch.cov(b.T).reshape(f, f)
    # Tr (Σ_a Σ_b)^{1/2} = Σ sqrt(eig(Σ_a Σ_b)); the eigenvalues are real and >= 0
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float(
        (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum()
    )


@torch.no_grad()
def nearest_distance(x: torch.Tensor, reference: torch.Tensor, batch: int = 500) -> torch.Tensor:
    """Euclidean distance (N,) from each image of x to its nearest image in ``reference``
    (pixels in [0, 1]): small values mean copies of the training data."""
    ref = reference.flatten(1)  # (M, D)
    ref_sq = ref.square().sum(1)
    out = []
    for i in range(0, len(x), batch):
        q = x[i : i + batch].flatten(1)  # (b, D)
        d2 = q.square().sum(1, keepdim=True) - 2 * q @ ref.T + ref_sq  # (b, M)
        out.append(d2.min(1).values.clamp(min=0).sqrt())
    return torch.cat(out)


def judge(
    clf: Classifier,
    images: torch.Tensor,
    labels: list[str] | None,
    real_features: torch.Tensor,
    train_images: torch.Tensor,
    real_radii: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Metrics of a set of images (N, C, H, W) uint8, optionally meant to show ``labels``;
    ``real_radii``: :func:`~vaelab.eval.manifolds.knn_radii` of ``real_features`` when known.
    Precision and recall are None where either set has no more than k = 3 features."""
    x = normalize(images)
    feats, probs = _features_and_probs(clf, clf.slots(x))
    pred = probs.argmax(1).reshape(len(x), -1)  # (N, S) digit per slot
    read = ["".join(clf.classes[int(k)] for k in row) for row in pred]
    p_y = probs.mean(0)
    enough = min(len(feats), len(real_features)) > K
    precision, recall = (
        precision_recall(feats, real_features, K, real_radii) if enough else (None, None)
    )
    row: dict[str, Any] = {
        "n": len(x),
        "frechet": frechet_distance(feats, real_features),
        "precision": precision,
        "recall": recall,
        "class_entropy": float(-(p_y * p_y.clamp_min(1e-12).log()).sum()),
        "inception_score": float(
            torch.exp(
                (probs * (probs.clamp_min(1e-12).log() - p_y.clamp_min(1e-12).log())).sum(1).mean()
            )
        ),
        "nearest_train_distance": float(nearest_distance(x, train_images).mean()),
    }
    if labels is not None:
        pairs = list(zip(read, labels, strict=True))
        row["label_accuracy"] = float(np.mean([r == t for r, t in pairs]))
        by_label = {t: float(np.mean([r == u for r, u in pairs if u == t])) for t in set(labels)}
        row["worst_label_accuracy"] = min(by_label.values())  # the label read back least often
        # digit by digit only where names are digit strings read slot by slot ("cat" read as
        # "bird" has no digits to compare)
        if digitwise(clf.classes) and all(len(r) == len(t) for r, t in pairs):
            hits = [a == b for r, t in pairs for a, b in zip(r, t, strict=True)]
            row["digit_accuracy"] = float(np.mean(hits))
    return row


@dataclass(frozen=True)
class Reference:
    """What generated images are compared against: real training images (N, C, H, W) in
    [0, 1], the judge's features of them (N·S, F) and the squared k-NN radii of those
    (None for k or fewer features)."""

    images: torch.Tensor
    features: torch.Tensor
    radii: torch.Tensor | None


def reference(clf: Classifier, train, n: int = 10000, generator=None) -> Reference:
    """The judge's :class:`Reference` of ``n`` images of dataset ``train`` drawn with
    ``generator`` (all of them when it holds fewer)."""
    images = normalize(train.images[torch.randperm(len(train), generator=generator)[:n]])
    features, _ = _features_and_probs(clf, clf.slots(images))
    return Reference(images, features, knn_radii(features, K) if len(features) > K else None)


def generation_metrics(
    run_dir: str | Path,
    classifier_dir: str | Path,
    n: int = 2000,
    seed: int = 0,
    labels: list[str] | None = None,
    cache=None,
    temperatures: tuple[float, ...] = (1.0,),
) -> dict[str, dict[str, Any]]:
    """Rows ``real test`` and one per sampling temperature of :func:`judge` for a run,
    judged by a classifier run. A conditional model generates for ``labels`` (default: its
    classes, cycled) and is scored on reading them back; the real row uses the test split's
    own labels."""
    cfg, model = load_generator(run_dir, cache)
    _, clf = load_run(classifier_dir)
    if not clf.can("read"):
        raise VaelabError(f"{classifier_dir} is not a classifier run (vaelab classifier train)")
    test = load_split(cfg.data.name, cfg.data.test_split, cache, 0, cfg.model.image_shape)
    train = load_split(cfg.data.name, cfg.data.split, cache, 0, cfg.model.image_shape)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(test), generator=g)[:n]
    real = test.subset(pick)
    ref = reference(clf, train, 10000, g)  # real training images: "real test" gives the floor
    real_labels = [test.classes[int(k)] for k in real.labels] if real.labels is not None else None
    rows = {"real test": judge(clf, real.images, real_labels, ref.features, ref.images, ref.radii)}
    conditional = bool(getattr(model, "classes", None))
    wanted = None
    if conditional:
        names = labels or list(model.classes)
        wanted = [names[i % len(names)] for i in range(n)]
    name = cfg.model.kind + "".join(f"+{s.label}" for s in model.stages if s.label)
    name += " (conditional)" if conditional else ""
    for t in temperatures:
        images = generate(model, n, wanted, seed, temperature=t)
        rows[name + ("" if t == 1.0 else f", T={t:g}")] = judge(
            clf, images, wanted, ref.features, ref.images, ref.radii
        )
    return rows


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """A text table, one row per image source."""
    keys = ["n", "label_accuracy", "worst_label_accuracy", "digit_accuracy", "frechet", "precision", "recall",
            "class_entropy", "inception_score", "nearest_train_distance"]  # fmt: skip
    head = f"{'source':<22}" + "".join(f"{k:>24}" for k in keys)
    lines = [head]
    for name, row in rows.items():
        cells = [row.get(k) for k in keys]
        shown = [
            "-" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)) for v in cells
        ]
        lines.append(f"{name:<22}" + "".join(f"{v:>24}" for v in shown))
    return "\n".join(lines)
