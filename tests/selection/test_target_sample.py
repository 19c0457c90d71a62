"""Steps 4-5: P_target ∝ share · M^γ, and drawing from it within a budget.

Statistical tests use fixed seeds and a stated tolerance: each observed cluster fraction must lie within
4 binomial standard deviations of P_target (a false alarm has probability < 1e-4 per cluster), and the γ = 0
counts must pass a chi-square goodness-of-fit test against the cluster sizes at p > 0.001.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from nemo_salad.selection.sample import DrawSequence, budget_prefix
from nemo_salad.selection.target import cluster_shares, target_distribution

SIZES = np.array([4000, 2000, 2000, 1000, 1000, 500, 500, 1000])  # K = 8, N = 12000
BAD = 4  # the cluster the stub misalignment makes much worse


def _assignments(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(SIZES.size), SIZES))


def stub_misalignment() -> np.ndarray:
    m = np.full(SIZES.size, 0.10)
    m[BAD] = 0.25  # 2.5x worse
    return m


def _draw(gamma: float, n_items: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    assign = _assignments()
    p = target_distribution(cluster_shares(assign, SIZES.size), stub_misalignment(), gamma)
    seq = DrawSequence(assign, p, seed=seed)
    sel = budget_prefix(seq, lambda i: 1.0, budget=float(n_items))
    assert len(sel.indices) == n_items and len(set(sel.indices)) == n_items  # without replacement
    return np.bincount(assign[sel.indices], minlength=SIZES.size), p


def test_target_matches_float64_formula():
    share = SIZES / SIZES.sum()
    m = stub_misalignment()
    for gamma in (0.0, 1.0, 5.0, 12.0):
        expected = share * m ** gamma / (share * m ** gamma).sum()
        np.testing.assert_allclose(target_distribution(share, m, gamma), expected, rtol=1e-12)
    assert target_distribution(share, m, 5.0)[BAD] > 0.85
    np.testing.assert_allclose(target_distribution(share, m, 0.0), share, rtol=0, atol=0)
    # an excluded (unmeasured) cluster gets zero mass and the rest renormalises
    m_nan = m.copy()
    m_nan[BAD] = np.nan
    p = target_distribution(share, m_nan, 5.0)
    assert p[BAD] == 0 and p.sum() == pytest.approx(1.0)
    # huge gamma stays finite (log-space)
    assert np.isfinite(target_distribution(share, m, 400.0)).all()
    with pytest.raises(ValueError, match="gamma"):
        target_distribution(share, m, -1.0)
    with pytest.raises(ValueError, match=">= 0"):
        target_distribution(share, -m, 5.0)


@pytest.mark.parametrize("seed", [0, 1])
def test_gamma5_spends_most_of_the_budget_on_the_worst_cluster(seed):
    n = 400
    counts, p = _draw(5.0, n, seed)
    assert counts[BAD] / n > 0.8  # "most of the budget"
    sd = np.sqrt(p * (1 - p) / n)
    assert (np.abs(counts / n - p) <= 4 * sd + 1e-12).all(), (counts / n, p)


@pytest.mark.parametrize("seed", [0, 1])
def test_gamma0_draws_proportionally_to_cluster_size(seed):
    n = 1200
    counts, p = _draw(0.0, n, seed)
    np.testing.assert_allclose(p, SIZES / SIZES.sum())
    assert stats.chisquare(counts, n * SIZES / SIZES.sum()).pvalue > 1e-3
    assert counts[BAD] / n < 0.2


def test_exhausted_clusters_are_renormalised_and_the_order_is_deterministic():
    assign = np.repeat([0, 1, 2], [5, 50, 50])
    p = np.array([0.9, 0.05, 0.05])
    order = list(DrawSequence(assign, p, seed=3))
    assert sorted(order) == list(range(105))  # every eligible text exactly once
    assert max(order.index(i) for i in range(5)) < 15  # cluster 0 (p = 0.9) is drained first ...
    assert 15 <= sum(assign[order[20:70]] == 1) <= 35  # ... then 1 and 2 share the renormalised mass 50/50
    assert order == list(DrawSequence(assign, p, seed=3))
    assert order != list(DrawSequence(assign, p, seed=4))
    eligible = np.ones(105, bool)
    eligible[[0, 60]] = False
    assert {0, 60}.isdisjoint(DrawSequence(assign, p, seed=3, eligible=eligible))
    # a cluster with zero target mass is never drawn
    assert 2 not in assign[list(DrawSequence(assign, np.array([0.5, 0.5, 0.0]), seed=0))]


def test_budget_respected_to_within_one_item():
    rng = np.random.default_rng(0)
    assign = rng.integers(0, 6, size=3000)
    cost = rng.uniform(2.0, 15.0, size=3000)  # e.g. seconds per utterance
    dropped = set(rng.choice(3000, 100, replace=False).tolist())
    for seed in range(20):
        budget = float(rng.uniform(50, 2000))
        seq = DrawSequence(assign, rng.dirichlet(np.ones(6)), seed=seed)
        sel = budget_prefix(seq, lambda i: None if i in dropped else cost[i], budget)
        assert not dropped & set(sel.indices)
        total = cost[sel.indices].sum()
        assert total == pytest.approx(sel.total) and total <= budget
        assert total > budget - sel.stop_cost  # undershoot smaller than the first item left out
    small = DrawSequence(np.zeros(3, int), np.array([1.0]), seed=0)
    sel = budget_prefix(small, lambda i: 1.0, budget=10.0)
    assert sel.exhausted and sel.total == 3.0
