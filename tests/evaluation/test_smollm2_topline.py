"""The text topline with the real SmolLM2-135M on offline ARC-Easy items."""

from __future__ import annotations

import pytest

from nemo_salad.evaluation import ScoringSettings, TextSystem, evaluate_benchmark, load_benchmark

# Bound: ARC-Easy has 4 options (3 items of 570 have 3 or 5): chance is 0.25. The same 200 items scored with the
# question removed from the prompt ("Question: ?\nAnswer:") give 0.335 (measured), i.e. what a scorer that loses
# the context would get. The reference for this model is ~0.50 unnormalised at zero-shot (assets.md, another
# 200-item sample) and this harness measured 0.595 on its seeded 200. The bound 0.45 is above chance by 6 and
# above the question-free score by 3 binomial standard deviations (sqrt(.25 * .75 / 200) = 0.031,
# sqrt(.5 * .5 / 200) = 0.035), and 4 standard deviations below the measured value.
MIN_ACC = 0.45


@pytest.mark.slow
def test_smollm2_zero_shot_arc_easy_is_well_above_chance(smollm2):
    llm, tokenizer = smollm2
    bench = load_benchmark("arc_easy", n_items=200)
    res = evaluate_benchmark(bench, [TextSystem(llm, tokenizer)], ScoringSettings(max_shots=0))
    scores = res.systems["text_llm"]
    assert res.n_items == 200 and abs(bench.chance - 0.25) < 0.01
    assert scores.acc >= MIN_ACC, (scores.acc, scores.acc_per_token, scores.acc_per_char)
    assert min(scores.acc_per_token, scores.acc_per_char) > 0.3  # normalised variants also clearly above chance
