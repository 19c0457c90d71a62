"""Step 2 of Stage II selection: balanced k-means over sentence embeddings.

Algorithm (stated bound, chosen for a hard guarantee at 100k-10M points on a CPU):

1. **Centroids**: faiss k-means (spherical for ``metric="cosine"``), seeded.
2. **Balanced assignment**: every cluster may hold at most ``U = ceil((1 + slack) N / K)`` points. In rounds,
   each unassigned point proposes to its nearest centroid that still has room; a centroid accepts its closest
   proposers up to its remaining room (capacity-constrained greedy by distance; at most K + 1 rounds, each
   vectorised). Then clusters below ``L = floor((1 - slack) N / K)`` take, one at a time, the points of clusters
   above ``L`` whose move costs the least extra distance.
3. **Refinement**: centroids are recomputed from the balanced assignment and step 2 is repeated
   (``refine_iter`` times), so the centroids follow the balanced partition instead of the unconstrained one.

Guarantee: ``L <= size(c) <= U`` for every cluster; with ``slack=0`` every size is ``floor(N/K)`` or
``ceil(N/K)``. Why not Sinkhorn / optimal transport: it balances only in expectation (rounding breaks the bound)
and costs more memory; min-cost flow is exact but far too slow for 10^5-10^7 points.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nemo_salad.selection.artefacts import file_sha256, fingerprint, read_json, write_json_atomic

__all__ = ["BalancedKMeansResult", "balanced_assign", "balanced_kmeans", "cluster_step", "size_bounds"]

log = logging.getLogger(__name__)


@dataclass
class BalancedKMeansResult:
    """Output of :func:`balanced_kmeans`.

    Attributes:
        assignments (np.ndarray): (N,) int32 cluster of each point.
        centroids (np.ndarray): (K, D) float32 centroids (unit norm for ``metric="cosine"``).
        sizes (np.ndarray): (K,) int64 points per cluster.
        bounds (tuple[int, int]): the guaranteed ``(L, U)`` size bounds.
        inertia (float): mean distance of a point to its assigned centroid.

    >>> r = BalancedKMeansResult(np.zeros(4, np.int32), np.ones((1, 2), np.float32), np.array([4]), (4, 4), 0.0)
    >>> r.sizes.tolist()
    [4]
    """

    assignments: np.ndarray
    centroids: np.ndarray
    sizes: np.ndarray
    bounds: tuple[int, int]
    inertia: float


def size_bounds(n: int, k: int, slack: float) -> tuple[int, int]:
    """Guaranteed cluster-size bounds ``(floor((1-slack) n/k), ceil((1+slack) n/k))``.

    >>> size_bounds(1000, 8, 0.0), size_bounds(1000, 8, 0.1)
    ((125, 125), (112, 138))
    """
    if not 0.0 <= slack < 1.0:
        raise ValueError(f"slack must be in [0, 1), got {slack}")
    return math.floor((1 - slack) * n / k + 1e-9), math.ceil((1 + slack) * n / k - 1e-9)


def _distances(x: np.ndarray, centroids: np.ndarray, metric: str, block: int = 65536) -> np.ndarray:
    """(N, K) float32 distances: ``1 - cos`` for cosine (unit rows assumed), squared L2 otherwise."""
    out = np.empty((x.shape[0], centroids.shape[0]), np.float32)
    c_sq = (centroids.astype(np.float32) ** 2).sum(1)  # (K,)
    for lo in range(0, x.shape[0], block):
        xb = np.asarray(x[lo:lo + block], dtype=np.float32)  # (B, D)
        dot = xb @ centroids.T.astype(np.float32)  # (B, K)
        out[lo:lo + block] = 1.0 - dot if metric == "cosine" else (xb ** 2).sum(1, keepdims=True) - 2 * dot + c_sq
    return out


def balanced_assign(dist: np.ndarray, lower: int, upper: int) -> np.ndarray:
    """Assign N points to K clusters with ``lower <= size <= upper`` (see the module docstring).

    Args:
        dist (np.ndarray): (N, K) distances.
        lower (int): minimum size L.
        upper (int): maximum size U.

    Returns:
        np.ndarray: (N,) int32 assignments.

    Raises:
        ValueError: if no assignment can meet the bounds (``K * L > N`` or ``K * U < N``).

    >>> d = np.array([[0.0, 1.0], [0.1, 1.0], [0.2, 1.0], [0.3, 0.9]])  # all prefer cluster 0
    >>> balanced_assign(d, 2, 2).tolist()
    [0, 0, 1, 1]
    """
    n, k = dist.shape
    if k * lower > n or k * upper < n:
        raise ValueError(f"cannot split {n} points into {k} clusters of size {lower}..{upper}")
    assign = np.full(n, -1, np.int64)
    room = np.full(k, upper, np.int64)
    pending = np.arange(n)
    while pending.size:
        d = dist[pending].copy()  # (P, K)
        d[:, room == 0] = np.inf
        choice = d.argmin(1)  # (P,)
        best = d[np.arange(pending.size), choice]
        order = np.lexsort((best, choice))  # grouped by centroid, closest first
        ranked_choice = choice[order]
        group_start = np.searchsorted(ranked_choice, ranked_choice)  # first index of each one's group
        rank = np.arange(order.size) - group_start
        accepted = order[rank < room[ranked_choice]]
        assign[pending[accepted]] = choice[accepted]
        np.subtract.at(room, choice[accepted], 1)
        pending = pending[assign[pending] < 0]
    sizes = np.bincount(assign, minlength=k)
    for c in np.flatnonzero(sizes < lower):  # lower-bound repair: cheapest moves from clusters above L
        extra = dist[:, c] - dist[np.arange(n), assign]  # (N,) cost of moving each point into c
        extra[assign == c] = np.inf
        width = min(n, 4 * int(lower - sizes[c]) + 64)  # sort only the cheapest candidates unless they run out
        while sizes[c] < lower:
            part = np.argpartition(extra, width - 1)[:width] if width < n else np.arange(n)
            for i in part[np.argsort(extra[part], kind="stable")]:
                if sizes[c] >= lower or not np.isfinite(extra[i]):
                    break
                if sizes[assign[i]] > lower:
                    sizes[assign[i]] -= 1
                    assign[i] = c
                    sizes[c] += 1
                extra[i] = np.inf  # moved or not movable now: never a candidate again for c
            width = min(n, 2 * width)
    return assign.astype(np.int32)


def _centroids(x: np.ndarray, assign: np.ndarray, k: int, metric: str) -> np.ndarray:
    """(K, D) mean of each cluster's points (unit-normalised for cosine)."""
    order = np.argsort(assign, kind="stable")
    sizes = np.bincount(assign, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    sums = np.add.reduceat(x[order].astype(np.float64), starts[sizes > 0], axis=0)  # (K', D)
    out = np.zeros((k, x.shape[1]), np.float64)
    out[sizes > 0] = sums / sizes[sizes > 0, None]
    if metric == "cosine":
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out.astype(np.float32)


def balanced_kmeans(
    x: np.ndarray,
    k: int,
    seed: int = 0,
    slack: float = 0.05,
    n_iter: int = 20,
    refine_iter: int = 3,
    metric: str = "cosine",
) -> BalancedKMeansResult:
    """Balanced k-means of ``x`` (see the module docstring for the algorithm and its bound).

    Args:
        x (np.ndarray): (N, D) embeddings (float32/float16; unit rows for cosine).
        k (int): number of clusters K (N >= K).
        seed (int): k-means seed. Default: 0.
        slack (float): allowed relative deviation from N/K, in [0, 1). Default: 0.05.
        n_iter (int): faiss k-means iterations. Default: 20.
        refine_iter (int): balanced re-assignment rounds after k-means. Default: 3.
        metric (str): ``"cosine"`` or ``"l2"``. Default: "cosine".

    Returns:
        BalancedKMeansResult: assignments, centroids, sizes, bounds and mean distance.

    Raises:
        ValueError: for ``k < 1``, ``N < k`` or an unknown metric.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(100, 8)).astype(np.float32)
    >>> res = balanced_kmeans(x / np.linalg.norm(x, axis=1, keepdims=True), k=4, slack=0.0)
    >>> res.sizes.tolist(), res.bounds
    ([25, 25, 25, 25], (25, 25))
    """
    import faiss

    if metric not in ("cosine", "l2"):
        raise ValueError(f"metric must be 'cosine' or 'l2', got {metric!r}")
    n, dim = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= N, got k={k}, N={n}")
    lower, upper = size_bounds(n, k, slack)
    data = np.ascontiguousarray(x, dtype=np.float32)
    # faiss trains on at most 256 points per centroid (its default subsample); the balanced refinement below
    # then uses every point.
    km = faiss.Kmeans(dim, k, niter=n_iter, seed=seed, spherical=metric == "cosine", verbose=False)
    km.train(data)
    centroids = km.centroids.astype(np.float32)
    assign = balanced_assign(_distances(data, centroids, metric), lower, upper)
    for _ in range(refine_iter):
        centroids = _centroids(data, assign, k, metric)
        assign = balanced_assign(_distances(data, centroids, metric), lower, upper)
    dist = _distances(data, centroids, metric)
    inertia = float(dist[np.arange(n), assign].mean())
    return BalancedKMeansResult(assign, centroids, np.bincount(assign, minlength=k), (lower, upper), inertia)


def cluster_step(embeddings: np.ndarray, embeddings_fingerprint: str, out_dir: str | Path, k: int, seed: int = 0,
                 slack: float = 0.05, n_iter: int = 20, refine_iter: int = 3,
                 metric: str = "cosine") -> BalancedKMeansResult:
    """:func:`balanced_kmeans` with its artefacts in ``out_dir`` (``assignments.npy``, ``centroids.npy``,
    ``clusters.json``), reused when the inputs' fingerprint and the files' hashes still match.

    Args:
        embeddings (np.ndarray): (N, D) embeddings.
        embeddings_fingerprint (str): fingerprint of the embeddings (from their sidecar).
        out_dir (str | Path): artefact directory.
        k, seed, slack, n_iter, refine_iter, metric: see :func:`balanced_kmeans`.

    Returns:
        BalancedKMeansResult: the (possibly reloaded) clustering.

    >>> import tempfile
    >>> x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> d = tempfile.mkdtemp()
    >>> a = cluster_step(x, "fp", d, k=4, slack=0.0); b = cluster_step(x, "fp", d, k=4, slack=0.0)
    >>> bool((a.assignments == b.assignments).all()), a.sizes.tolist()
    (True, [10, 10, 10, 10])
    """
    out = Path(out_dir)
    params = {"k": k, "seed": seed, "slack": slack, "n_iter": n_iter, "refine_iter": refine_iter, "metric": metric}
    inputs = fingerprint("clusters", embeddings_fingerprint, params)
    marker = read_json(out / "clusters.json")
    if marker is not None and marker.get("inputs") == inputs:
        try:
            if all(file_sha256(out / name) == marker["sha256"][name] for name in ("assignments.npy", "centroids.npy")):
                assign = np.load(out / "assignments.npy")
                sizes = np.bincount(assign, minlength=k)
                return BalancedKMeansResult(assign, np.load(out / "centroids.npy"), sizes,
                                            tuple(marker["bounds"]), float(marker["inertia"]))
        except (OSError, KeyError, ValueError):
            pass
        log.warning("%s: cluster files do not match their marker; clustering again", out)
    result = balanced_kmeans(np.asarray(embeddings), k, seed=seed, slack=slack, n_iter=n_iter,
                             refine_iter=refine_iter, metric=metric)
    out.mkdir(parents=True, exist_ok=True)
    (out / "clusters.json").unlink(missing_ok=True)
    np.save(out / "assignments.npy", result.assignments)
    np.save(out / "centroids.npy", result.centroids)
    write_json_atomic(out / "clusters.json", {
        "inputs": inputs, "params": params, "n": int(result.assignments.size), "bounds": list(result.bounds),
        "sizes": result.sizes.tolist(), "inertia": result.inertia,
        "sha256": {name: file_sha256(out / name) for name in ("assignments.npy", "centroids.npy")}})
    return result
