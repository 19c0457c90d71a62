"""The study's statistics against independent references: scikit-learn's leave-one-out predictions, a plain loop
over bootstrap rows, numpy's percentiles."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import LeaveOneOut, cross_val_predict

from nemo_salad.study.stats import draws, interval, loo_r2, ols, ratio_draws


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loo_r2_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=7)
    y = -3.0 * x + rng.normal(scale=1.5, size=7)
    pred = cross_val_predict(LinearRegression(), x[:, None], y, cv=LeaveOneOut())
    reference = 1 - ((y - pred) ** 2).sum() / ((y - y.mean()) ** 2).sum()  # PRESS form, ȳ over all points
    assert loo_r2(x, y) == pytest.approx(reference, rel=1e-9)
    a, b, r2 = ols(x, y)
    fit = LinearRegression().fit(x[:, None], y)
    assert (a, b) == pytest.approx((fit.intercept_, fit.coef_[0]), rel=1e-9)
    assert r2 == pytest.approx(r2_score(y, fit.predict(x[:, None])), rel=1e-9)


def test_loo_r2_is_negative_without_a_relation_and_nan_without_spread():
    rng = np.random.default_rng(3)
    assert loo_r2(rng.normal(size=12), rng.normal(size=12)) < 0.2
    assert np.isnan(loo_r2([1, 2, 3, 4], [5, 5, 5, 5]))
    assert np.isnan(loo_r2([1, 2], [1, 2]))


def test_ratio_draws_is_the_token_weighted_mean_of_each_resample():
    rng = np.random.default_rng(4)
    sums, counts = rng.uniform(0, 5, size=9), rng.integers(0, 20, size=9)
    idx = draws(9, 50, seed=5)
    loop = [sum(sums[i] for i in row) / sum(counts[i] for i in row) if sum(counts[i] for i in row) else np.nan
            for row in idx]
    np.testing.assert_allclose(ratio_draws(sums, counts, idx), loop, rtol=1e-12)


def test_interval_is_the_percentile_interval_and_ignores_nan():
    samples = np.random.default_rng(6).normal(size=1000)
    iv = interval(0.1, np.concatenate([samples, [np.nan]]), level=0.9)
    assert (iv.point, iv.low, iv.high) == pytest.approx((0.1, *np.percentile(samples, [5, 95])))
    assert iv.contains(0.0) and not iv.contains(10.0)
    assert np.isnan(interval(1.0, np.array([np.nan])).low)


def test_a_paired_difference_is_narrower_than_either_accuracy():
    """Two models right on the same items: the shared draws make their difference's interval tight."""
    rng = np.random.default_rng(7)
    a = rng.random(200) < 0.6
    b = a.copy()
    b[:4] = ~b[:4]  # 4 items differ
    idx = draws(200, 2000, seed=8)
    da, db = a[idx].mean(1), b[idx].mean(1)
    width = lambda iv: iv.high - iv.low  # noqa: E731
    assert width(interval(0, da - db)) < width(interval(0, da)) / 3


def test_sample_size_for_a_half_width_of_half_the_effect():
    import math

    from nemo_salad.study.analysis import _n_for
    from nemo_salad.study.stats import Interval

    # half-width 0.1 at n = 32; an effect of 0.1 needs half-width 0.05: 4x the sample (1/sqrt(n))
    assert _n_for(32, Interval((-0.1, -0.2, 0.0)), -0.1) == pytest.approx(128)
    assert math.isinf(_n_for(32, Interval((0.0, -0.2, 0.2)), 0.0))
    assert math.isnan(_n_for(8, Interval((0.0, 0.0, 0.0)), 2.9))
