"""Balanced k-means: the stated size bound holds on skewed synthetic data, the assignment is close to the optimal
balanced assignment (Hungarian reference), and the clustering still finds real structure."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from nemo_salad.selection.cluster import _distances, balanced_assign, balanced_kmeans, cluster_step, size_bounds


def _skewed_blobs(n: int, k_true: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``k_true`` centres with very unequal blob sizes (Dirichlet(0.5) proportions)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k_true, dim))
    labels = rng.choice(k_true, size=n, p=rng.dirichlet(np.full(k_true, 0.5)))
    x = centres[labels] + 0.4 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("n,k,slack,seed", [(2000, 16, 0.0, 0), (2000, 16, 0.1, 1), (3001, 32, 0.05, 2),
                                            (500, 7, 0.0, 3)])
def test_sizes_within_stated_bound(n, k, slack, seed):
    x, _ = _skewed_blobs(n, k_true=k // 2 + 1, dim=24, seed=seed)
    res = balanced_kmeans(x, k, seed=seed, slack=slack)
    lower, upper = size_bounds(n, k, slack)
    assert res.bounds == (lower, upper)
    assert res.sizes.sum() == n and (res.sizes == np.bincount(res.assignments, minlength=k)).all()
    assert lower <= res.sizes.min() and res.sizes.max() <= upper, (res.sizes.min(), res.sizes.max(), lower, upper)
    if slack == 0.0:  # exact balance: every size is floor(N/K) or ceil(N/K)
        assert set(res.sizes.tolist()) <= {n // k, -(-n // k)}
    # the unconstrained k-means on the same data is far from balanced (so the bound is not trivially met)
    import faiss

    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed, spherical=True)
    km.train(x)
    plain = np.bincount(km.index.search(x, 1)[1][:, 0], minlength=k)
    assert plain.max() > upper or plain.min() < lower


def test_assignment_close_to_optimal_balanced_assignment():
    """Reference: the exact minimum-cost assignment with capacities (Hungarian on centroids repeated N/K times)."""
    rng = np.random.default_rng(0)
    for trial in range(5):
        n, k = 60, 4
        dist = rng.random((n, k)).astype(np.float64) + np.linspace(0, 0.5, k)  # all points lean to cluster 0
        assign = balanced_assign(dist, n // k, n // k)
        assert (np.bincount(assign, minlength=k) == n // k).all()
        rows, cols = linear_sum_assignment(np.repeat(dist, n // k, axis=1))
        optimum = dist[rows, cols // (n // k)].sum()
        greedy = dist[np.arange(n), assign].sum()
        assert optimum <= greedy <= 1.15 * optimum, (trial, greedy, optimum)


def test_recovers_equal_sized_topics():
    rng = np.random.default_rng(5)
    k, per, dim = 8, 150, 32
    centres = rng.normal(size=(k, dim))
    labels = np.repeat(np.arange(k), per)
    x = centres[labels] + 0.5 * rng.normal(size=(k * per, dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    res = balanced_kmeans(x, k, seed=0, slack=0.05)
    # each found cluster is (almost) one true topic
    purity = sum(np.bincount(labels[res.assignments == c]).max() for c in range(k)) / labels.size
    assert purity > 0.95
    # the inertia reported is the mean distance to the assigned centroid (float64 re-computation)
    d = 1.0 - x.astype(np.float64) @ res.centroids.astype(np.float64).T
    assert res.inertia == pytest.approx(d[np.arange(labels.size), res.assignments].mean(), abs=1e-5)
    assert np.allclose(_distances(x, res.centroids, "cosine"), d, atol=1e-5)


def test_cluster_step_reuses_only_matching_artefacts(tmp_path):
    x, _ = _skewed_blobs(400, 5, 8, seed=0)
    a = cluster_step(x, "emb-fp", tmp_path, k=8, seed=0)
    stamp = (tmp_path / "assignments.npy").stat().st_mtime_ns
    b = cluster_step(x, "emb-fp", tmp_path, k=8, seed=0)
    assert (tmp_path / "assignments.npy").stat().st_mtime_ns == stamp and (a.assignments == b.assignments).all()
    # a corrupted artefact is detected by its hash and recomputed
    np.save(tmp_path / "assignments.npy", np.zeros(400, np.int32))
    c = cluster_step(x, "emb-fp", tmp_path, k=8, seed=0)
    assert (c.assignments == a.assignments).all()
    # other inputs (new embeddings fingerprint, other K) are not served from the old files
    d = cluster_step(x, "emb-fp", tmp_path, k=4, seed=0)
    assert d.sizes.size == 4 and d.assignments.max() == 3
    with pytest.raises(ValueError, match="need 1 <= k <= N"):
        balanced_kmeans(x[:3], 4)
