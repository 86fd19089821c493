"""Precision and recall of generated samples (Kynkäänniemi et al. 2019): k-nearest-neighbour
manifolds in a feature space.

The manifold of a feature set Φ is the union of the balls B(φ, r_k(φ)), φ ∈ Φ, where
r_k(φ) is the distance from φ to its k-th nearest neighbour among the *other* points of Φ.
Precision is the fraction of generated features inside the real manifold, recall the
fraction of real features inside the generated one (a point on a ball's surface counts as
inside). Distances are compared squared, in float64 and in blocks of rows, so memory stays
bounded (10,000 x 10,000 features: blocks of 1,000 rows).
"""

from __future__ import annotations

import torch

K = 3
"""Neighbours of the manifolds' radii: Kynkäänniemi et al.'s choice."""


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² (N, M) of feature rows a (N, F) and b (M, F), float64, never negative."""
    a, b = a.double(), b.double()
    d2 = a.square().sum(1, keepdim=True) - 2 * a @ b.T + b.square().sum(1)  # (N, M)
    return d2.clamp_min(0)


def knn_radii(features: torch.Tensor, k: int = K, block: int = 1000) -> torch.Tensor:
    """The squared distance (N,) from each row of ``features`` (N, F) to its k-th nearest
    neighbour among the other rows (a duplicate row is a neighbour at distance 0)."""
    if len(features) <= k:
        raise ValueError(f"a k = {k} manifold needs more than {k} points, got {len(features)}")
    out = []
    for start in range(0, len(features), block):
        d2 = _squared_distances(features[start : start + block], features)  # (b, N)
        rows = torch.arange(len(d2))
        d2[rows, rows + start] = -1.0  # the point itself: first in the order, then skipped
        out.append(d2.topk(k + 1, dim=1, largest=False).values[:, k])  # (b,)
    return torch.cat(out)


def coverage(queries: torch.Tensor, points: torch.Tensor, radii: torch.Tensor,
             block: int = 1000) -> float:  # fmt: skip
    """The fraction of ``queries`` (N, F) inside the manifold of ``points`` (M, F) with
    squared radii ``radii`` (M,): within the ball of at least one point."""
    inside = 0
    for start in range(0, len(queries), block):
        d2 = _squared_distances(queries[start : start + block], points)  # (b, M)
        inside += int((d2 <= radii).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(
    generated: torch.Tensor,
    real: torch.Tensor,
    k: int = K,
    real_radii: torch.Tensor | None = None,
) -> tuple[float, float]:
    """(precision, recall) of ``generated`` (N, F) against ``real`` (M, F) features;
    ``real_radii`` (:func:`knn_radii` of ``real``) may be passed when judging many sets
    against one reference."""
    if real_radii is None:
        real_radii = knn_radii(real, k)
    precision = coverage(generated, real, real_radii)
    recall = coverage(real, generated, knn_radii(generated, k))
    return precision, recall
