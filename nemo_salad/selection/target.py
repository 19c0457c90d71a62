"""Step 4 of Stage II selection: the target cluster distribution ``P_target(c) ∝ P_web(c) · M(c)^γ``
(paper Eqs. 8-9, γ = 5; γ = 0 gives sampling proportional to cluster size, the ablation baseline).
"""

from __future__ import annotations

import numpy as np

__all__ = ["cluster_shares", "target_distribution"]


def cluster_shares(assignments: np.ndarray, k: int) -> np.ndarray:
    """``P_web(c)``: the fraction of the corpus in each cluster.

    Args:
        assignments (np.ndarray): (N,) cluster ids in ``[0, k)``.
        k (int): number of clusters.

    Returns:
        np.ndarray: (K,) float64 summing to 1.

    >>> cluster_shares(np.array([0, 0, 1, 2]), 3).tolist()
    [0.5, 0.25, 0.25]
    """
    assignments = np.asarray(assignments)
    if assignments.size == 0 or assignments.min() < 0 or assignments.max() >= k:
        raise ValueError(f"assignments must be non-empty ids in [0, {k}), got range "
                         f"[{assignments.min() if assignments.size else None}, "
                         f"{assignments.max() if assignments.size else None}]")
    return np.bincount(assignments, minlength=k) / assignments.size


def target_distribution(share: np.ndarray, misalignment: np.ndarray, gamma: float,
                        valid: np.ndarray | None = None) -> np.ndarray:
    """``P_target(c) = P_web(c) M(c)^γ / Σ_c' P_web(c') M(c')^γ`` over the valid clusters, 0 elsewhere.

    Computed in log space (``log P_web + γ log M``, then a softmax), so γ = 5 with large or tiny M neither
    overflows nor underflows to all-zero. ``M = 0`` gives 0 for γ > 0 and 1 (``0^0``) for γ = 0.

    Args:
        share (np.ndarray): (K,) ``P_web``, non-negative.
        misalignment (np.ndarray): (K,) ``M(c) >= 0``; NaN for unmeasured clusters (then they must be invalid).
        gamma (float): exponent γ >= 0.
        valid (np.ndarray | None): (K,) bool, clusters allowed to be drawn. Default: all with finite M.

    Returns:
        np.ndarray: (K,) float64 probabilities summing to 1.

    Raises:
        ValueError: for γ < 0, negative shares or M, mismatched shapes, or no cluster with positive mass.

    >>> target_distribution(np.array([0.5, 0.5]), np.array([1.0, 2.0]), gamma=5).round(4).tolist()
    [0.0303, 0.9697]
    >>> target_distribution(np.array([0.75, 0.25]), np.array([1.0, 2.0]), gamma=0).tolist()
    [0.75, 0.25]
    """
    share = np.asarray(share, np.float64)
    m = np.asarray(misalignment, np.float64)
    if share.shape != m.shape or share.ndim != 1:
        raise ValueError(f"share and misalignment must be (K,) arrays of one shape, got {share.shape}, {m.shape}")
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    valid = np.isfinite(m) if valid is None else np.asarray(valid, bool) & np.isfinite(m)
    if (share < 0).any() or (m[valid] < 0).any():
        raise ValueError(f"shares and misalignment must be >= 0; got min share {share.min()}, "
                         f"min M {m[valid].min() if valid.any() else None}")
    if gamma == 0:  # exactly proportional to size (no exp/log round-off in the baseline)
        w = np.where(valid, share, 0.0)
        if w.sum() <= 0:
            raise ValueError("no cluster has positive target mass (all excluded or empty)")
        return w / w.sum()
    with np.errstate(divide="ignore"):
        log_w = np.log(share) + gamma * np.log(np.where(valid, m, 1.0))
    log_w = np.where(valid, log_w, -np.inf)
    if not np.isfinite(log_w).any():
        raise ValueError("no cluster has positive target mass (all excluded, empty, or with M = 0)")
    w = np.exp(log_w - log_w[np.isfinite(log_w)].max())
    return w / w.sum()
