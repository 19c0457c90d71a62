"""Error bars of a run against plain-numpy reimplementations: the bootstrap of a cell, of the average over
benchmarks (items resampled within each benchmark) and of a paired gap; mean ± std over seeds; the spread over
conditions; statistics when seeds or conditions scored different items."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from nemo_salad.evaluation.intervals import bootstrap_mean, draw_seed, seed_stats
from nemo_salad.evaluation.summary import AVERAGE, summarise


def _reference(values: dict[str, np.ndarray], reps: int, level: float, seed: int) -> tuple[float, float, float]:
    """The percentile bootstrap written out: per benchmark rng(crc32("seed/name")).integers(0, n, (reps, n))."""
    per_bench = []
    for name, v in values.items():
        rng = np.random.default_rng(zlib.crc32(f"{seed}/{name}".encode()))
        idx = rng.integers(0, len(v), size=(reps, len(v)))
        per_bench.append(np.array([v[row].mean() for row in idx]))
    stat = np.mean(per_bench, axis=0)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(stat, [tail, 100 - tail])
    return float(np.mean([v.mean() for v in values.values()])), float(low), float(high)


def test_a_cell_interval_matches_numpy_and_contains_the_point():
    rng = np.random.default_rng(0)
    correct = (rng.random(40) < 0.6).astype(float)
    iv = bootstrap_mean({"copa": correct}, reps=500, level=0.95, seed=3)
    assert (iv.point, iv.low, iv.high) == pytest.approx(_reference({"copa": correct}, 500, 0.95, 3), abs=1e-12)
    assert iv.low < iv.point < iv.high
    narrow = bootstrap_mean({"copa": correct}, reps=500, level=0.5, seed=3)
    assert iv.low < narrow.low < narrow.high < iv.high  # a lower level gives a narrower interval
    assert np.isnan(bootstrap_mean({"copa": correct}, reps=0).low)


def test_the_average_resamples_within_each_benchmark_and_gaps_are_paired():
    rng = np.random.default_rng(1)
    top = {"copa": (rng.random(30) < 0.7).astype(float), "piqa": (rng.random(12) < 0.5).astype(float)}
    iv = bootstrap_mean(top, reps=400, seed=0)
    assert (iv.point, iv.low, iv.high) == pytest.approx(_reference(top, 400, 0.95, 0), abs=1e-12)
    assert iv.point == pytest.approx((top["copa"].mean() + top["piqa"].mean()) / 2)
    # a system that differs from the topline on 2 items: the paired gap's interval is much narrower than either
    # accuracy's (same draws for both), and it is the interval of the per-item differences
    system = {k: v.copy() for k, v in top.items()}
    system["copa"][:2] = 1 - system["copa"][:2]
    diff = {k: top[k] - system[k] for k in top}
    gap = bootstrap_mean(diff, reps=400, seed=0)
    assert (gap.point, gap.low, gap.high) == pytest.approx(_reference(diff, 400, 0.95, 0), abs=1e-12)
    assert gap.high - gap.low < (iv.high - iv.low) / 2
    assert draw_seed(0, "copa") != draw_seed(0, "piqa")


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="no per-item values"):
        bootstrap_mean({"copa": []}, reps=10)
    with pytest.raises(ValueError, match="level"):
        bootstrap_mean({"copa": [1.0]}, reps=10, level=1.5)
    with pytest.raises(ValueError, match="at least one"):
        seed_stats([])


def _table():
    """Two seeds, two benchmarks, a topline and a speech system in two conditions (the noisy one lost an item)."""
    top = {"copa": {0: {"a": 1, "b": 1, "c": 0, "d": 1}, 1: {"a": 1, "b": 0, "c": 0, "d": 1}},
           "piqa": {0: {"x": 1, "y": 0}, 1: {"x": 1, "y": 1}}}
    speech = {"copa": {0: {"a": 1, "b": 0, "c": 0, "d": 1}, 1: {"a": 0, "b": 0, "c": 0, "d": 1}},
              "piqa": {0: {"x": 0, "y": 0}, 1: {"x": 1, "y": 0}}}
    noisy = {"copa": {0: {"a": 0, "b": 0, "c": 1}, 1: {"a": 0, "b": 0, "c": 0}},
             "piqa": {0: {"x": 0, "y": 0}, 1: {"x": 0, "y": 1}}}
    table = {}
    for cond, name, data in (("default", "text_llm", top), ("default", "speech_model", speech),
                             ("noisy", "speech_model", noisy)):
        for bench, seeds in data.items():
            table[(cond, name, bench)] = {s: {i: float(v) for i, v in items.items()} for s, items in seeds.items()}
    return table, top, speech, noisy


def test_summary_against_a_hand_computation():
    table, top, speech, noisy = _table()
    s = summarise(table, ["copa", "piqa"], ["text_llm", "speech_model"], "text_llm", "default", reps=300, seed=5)
    acc = lambda d: np.mean(list(d.values()))  # noqa: E731
    # accuracy per seed, mean and sample std over seeds
    cell = s.cell("default", "speech_model", "copa")
    assert cell.per_seed == {0: 0.5, 1: 0.25}
    assert (cell.mean, cell.std) == pytest.approx((0.375, np.std([0.5, 0.25], ddof=1)))
    # the interval resamples the per-item correctness averaged over seeds
    values = np.array([np.mean([speech["copa"][k][i] for k in (0, 1)]) for i in "abcd"])
    assert (cell.mean, cell.low, cell.high) == pytest.approx(_reference({"copa": values}, 300, 0.95, 5))
    # the average over benchmarks: per seed the mean of the benchmark accuracies
    avg = s.cell("default", "speech_model", AVERAGE)
    per_seed = [(acc(speech["copa"][k]) + acc(speech["piqa"][k])) / 2 for k in (0, 1)]
    assert list(avg.per_seed.values()) == pytest.approx(per_seed)
    assert (avg.mean, avg.std) == pytest.approx((np.mean(per_seed), np.std(per_seed, ddof=1)))
    assert avg.n == 6
    # a gap in another condition: paired on the items both scored under that seed (the noisy run lost item d)
    gap = s.gap("noisy", "speech_model", "copa")
    by_seed = [np.mean([top["copa"][k][i] - noisy["copa"][k][i] for i in "abc"]) for k in (0, 1)]
    assert list(gap.per_seed.values()) == pytest.approx(by_seed)
    assert gap.n == 3 and gap.low <= gap.mean <= gap.high
    assert s.gap("default", "text_llm", "copa") is None  # no gap of the topline to itself
    # the spread of the speech model over the two conditions
    spread = {(x.system, x.benchmark): x for x in s.spread}
    copa = spread[("speech_model", "copa")]
    noisy_copa = np.mean([acc(noisy["copa"][k]) for k in (0, 1)])
    assert copa.by_condition == pytest.approx({"default": 0.375, "noisy": noisy_copa})
    assert copa.range == pytest.approx(abs(0.375 - noisy_copa))
    assert copa.std == pytest.approx(np.std([0.375, noisy_copa], ddof=1))
    assert ("text_llm", "copa") not in spread  # scored in one condition only


def test_one_seed_has_no_std_and_no_resamples_no_interval():
    table, *_ = _table()
    one = {k: {0: v[0]} for k, v in table.items()}
    s = summarise(one, ["copa", "piqa"], ["text_llm", "speech_model"], "text_llm", "default", reps=0)
    cell = s.cell("default", "text_llm", "piqa")
    assert (cell.mean, cell.std, cell.low, cell.high) == (0.5, None, None, None)
    assert s.cell("default", "text_llm", AVERAGE).mean == pytest.approx((0.75 + 0.5) / 2)
    assert not any(c.benchmark == AVERAGE for c in summarise(one, ["copa", "piqa"], ["text_llm"], None, "default",
                                                             reps=0, average=False).cells)
