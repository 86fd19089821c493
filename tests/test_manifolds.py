"""Precision and recall of samples (Kynkäänniemi et al. 2019, k-NN manifolds) against a
brute-force count with explicit loops, and the limiting cases."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.eval.manifolds import coverage, knn_radii, precision_recall


def brute(generated, real, k):
    """Explicit loops over integer points: squared distances are exact integers."""

    def d2(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b, strict=True))

    def radius(points, i):
        return sorted(d2(points[i], q) for j, q in enumerate(points) if j != i)[k - 1]

    def inside(queries, points):
        radii = [radius(points, i) for i in range(len(points))]
        hits = [any(d2(q, p) <= r for p, r in zip(points, radii, strict=True)) for q in queries]
        return sum(hits) / len(queries)

    return inside(generated, real), inside(real, generated)


points = st.lists(st.integers(-4, 4), min_size=2, max_size=2)  # 2-D, many ties and duplicates


@settings(max_examples=150, deadline=None)
@given(st.lists(points, min_size=4, max_size=25), st.lists(points, min_size=4, max_size=25),
       st.integers(1, 3))  # fmt: skip
def test_precision_recall_against_explicit_loops(generated, real, k):
    g, r = torch.tensor(generated, dtype=torch.float64), torch.tensor(real, dtype=torch.float64)
    assert precision_recall(g, r, k) == brute(generated, real, k)
    # blocks of rows change nothing; radii given are the ones computed
    assert torch.equal(knn_radii(r, k, block=3), knn_radii(r, k))
    assert coverage(g, r, knn_radii(r, k), block=2) == brute(generated, real, k)[0]


def test_identical_sets_give_one_and_far_apart_sets_give_zero():
    torch.manual_seed(0)
    a = torch.randn(500, 16)
    assert precision_recall(a, a.clone()) == (1.0, 1.0)
    assert precision_recall(a + 100, a) == (0.0, 0.0)
    # every real point among the samples, and as many far away: precision 1/2, recall 1
    assert precision_recall(torch.cat([a, a + 100]), a) == (0.5, 1.0)


def test_a_manifold_needs_more_than_k_points():
    with pytest.raises(ValueError, match="needs more than 3 points"):
        knn_radii(torch.zeros(3, 2), 3)
