"""A whole selection round on a topical corpus with the real synthesis writer (SineBackend audio), a stub
misalignment and the hashing encoder: γ behaviour, budget enforcement with real durations, CER drop-outs,
reuse of artefacts, and the before/after report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nemo_salad.selection import HashingEncoder, SelectionConfig, add_after_measurement, run_selection_round
from nemo_salad.synthesis import SineBackend
from tests.selection.helpers import (
    DropFilter,
    RecordingBackend,
    RecordingEncoder,
    TopicMeasure,
    topic_corpus,
    topic_of,
)


@pytest.fixture(scope="module")
def corpus():
    return topic_corpus(100)


def _cfg(**kw):
    base = dict(cluster={"k": 6, "slack": 0.0}, probe_size=6, budget=0.06, gamma=5.0, seed=0, shard_size=16)
    base.update(kw)
    return SelectionConfig(**base)


def _physics_share(result) -> float:
    cuts = list(result.cuts)
    total = sum(c.duration for c in cuts)
    return sum(c.duration for c in cuts if topic_of(c.supervisions[0].text) == "physics") / total


def test_gamma5_targets_the_misaligned_cluster_and_gamma0_does_not(corpus, tmp_path):
    hot = run_selection_round(_cfg(gamma=5.0), corpus, TopicMeasure("physics"), SineBackend(), tmp_path / "g5",
                              encoder=HashingEncoder())
    flat = run_selection_round(_cfg(gamma=0.0), corpus, TopicMeasure("physics"), SineBackend(), tmp_path / "g0",
                               encoder=HashingEncoder())
    assert _physics_share(hot) > 0.8
    assert _physics_share(flat) < 0.45
    rows = hot.report["clusters"]
    bad = [r for r in rows if r["misalignment"] == 3.0]
    assert len(bad) == 1 and bad[0]["p_target"] == pytest.approx(243 / (243 + 5), abs=0.02)
    assert sum(r["drawn"] for r in rows) == len(hot.selection.ids) == sum(1 for _ in hot.cuts)
    # report on disk: JSON with every column, and a PNG
    on_disk = json.loads((tmp_path / "g5" / "report.json").read_text())
    assert set(on_disk["clusters"][0]) >= {"cluster", "share", "misalignment", "p_target", "drawn", "drawn_cost",
                                           "probe_n", "probe_dropped", "excluded", "misalignment_after"}
    assert (tmp_path / "g5" / "report.png").read_bytes()[:4] == b"\x89PNG"
    # probes are not part of the training selection
    plans = [json.loads(p.read_text())["ids"] for p in (tmp_path / "g5" / "probes").glob("c*/plan.json")]
    assert len(plans) == 6 and not {i for ids in plans for i in ids} & set(hot.selection.ids)


def test_hours_budget_enforced_with_real_durations(corpus, tmp_path):
    backend = RecordingBackend(SineBackend(), variable_rate=True)  # real durations 0.5x..1.5x the estimate
    budget_h = 0.05
    res = run_selection_round(_cfg(budget=budget_h, gamma=1.0), corpus, TopicMeasure(), backend, tmp_path,
                              encoder=HashingEncoder())
    durations = [c.duration for c in res.cuts]
    total = sum(durations)
    assert total == pytest.approx(res.selection.total, abs=1e-6)
    assert total <= budget_h * 3600
    assert total > budget_h * 3600 - res.selection.stop_cost  # short of the budget by less than one item
    assert res.selection.stop_cost <= max(len(d.text) for d in corpus) * 0.06 * 1.5 + 1e-6
    # the chars/s estimate alone was off for these items: the bound above holds because real durations were used
    texts = {d.id: d.text for d in corpus}
    estimate = sum(len(texts[i]) for i in res.selection.ids) * res.report["summary"]["seconds_per_char"]
    per_item = [abs(c.duration - len(c.supervisions[0].text) * res.report["summary"]["seconds_per_char"])
                for c in res.cuts]
    assert np.mean(per_item) > 1.0 and abs(estimate - total) > 1e-3
    # audio is really there and matches the stored duration
    cut = next(iter(res.cuts))
    assert cut.load_audio().shape[1] == pytest.approx(cut.duration * 16000, abs=1)


def test_token_budget(corpus, tmp_path):
    count = lambda text: len(text.split())  # noqa: E731 - a whitespace "tokenizer"
    res = run_selection_round(_cfg(budget=500, budget_unit="tokens"), corpus, TopicMeasure(), SineBackend(),
                              tmp_path, encoder=HashingEncoder(), count_tokens=count)
    tokens = sum(count(c.supervisions[0].text) for c in res.cuts)
    assert tokens == res.selection.total and 500 - res.selection.stop_cost < tokens <= 500
    with pytest.raises(ValueError, match="needs a tokenizer"):
        run_selection_round(_cfg(budget=500, budget_unit="tokens"), corpus, TopicMeasure(), SineBackend(),
                            tmp_path / "b", encoder=HashingEncoder())


def test_cer_dropouts_exclude_a_cluster(corpus, tmp_path):
    garbled = DropFilter(lambda text: topic_of(text) == "cooking")  # the TTS garbles every cooking text
    res = run_selection_round(_cfg(gamma=0.0), corpus, TopicMeasure(), SineBackend(), tmp_path,
                              encoder=HashingEncoder(), asr_filter=garbled)
    excluded = [r for r in res.report["clusters"] if r["excluded"]]
    assert len(excluded) == 1
    row = excluded[0]
    assert row["probe_dropped"] == row["probe_n"] == 6 and "drop-out 6/6" in row["excluded"]
    assert row["p_target"] == 0 and row["drawn"] == 0 and row["misalignment"] is None
    assert not any(topic_of(c.supervisions[0].text) == "cooking" for c in res.cuts)
    assert res.report["summary"]["excluded_clusters"] == 1


def test_rerun_reuses_all_artefacts_and_after_measurement(corpus, tmp_path):
    first = run_selection_round(_cfg(), corpus, TopicMeasure(), SineBackend(), tmp_path, encoder=HashingEncoder())
    encoder, backend, measure = RecordingEncoder(HashingEncoder()), RecordingBackend(SineBackend()), TopicMeasure()
    again = run_selection_round(_cfg(), corpus, measure, backend, tmp_path, encoder=encoder)
    assert again.selection.ids == first.selection.ids
    assert (encoder.encoded, len(backend.texts), measure.calls) == (0, 0, 0)
    other_seed = run_selection_round(_cfg(seed=1), corpus, TopicMeasure(), SineBackend(), tmp_path,
                                     encoder=encoder)
    assert encoder.encoded == 0 and other_seed.selection.ids != first.selection.ids
    # after "Stage II": the misaligned cluster improved; the report gains the after column and keeps the before one
    report = add_after_measurement(tmp_path, TopicMeasure("physics", bad=1.5, good=0.9), tag="stage2")
    rows = [r for r in report["clusters"] if r["misalignment"] is not None]
    assert {(r["misalignment"], r["misalignment_after"]) for r in rows} == {(3.0, 1.5), (1.0, 0.9)}
    assert json.loads((tmp_path / "report.json").read_text())["summary"]["after_tag"] == "stage2"
    assert np.isclose(report["summary"]["mean_misalignment_after"], np.mean([r["misalignment_after"] for r in rows]))


def test_probe_values_of_another_measure_definition_are_measured_again(corpus, tmp_path):
    """Stored M(c) values are reused only under the measure's own definition (e.g. not those averaged over other
    positions before the definition changed)."""
    from nemo_salad.metrics.measure import MISALIGNMENT_DEFINITION

    run_selection_round(_cfg(), corpus, TopicMeasure(), SineBackend(), tmp_path, encoder=HashingEncoder())
    renamed = TopicMeasure(bad=4.0)
    renamed.definition = MISALIGNMENT_DEFINITION
    again = run_selection_round(_cfg(), corpus, renamed, SineBackend(), tmp_path, encoder=HashingEncoder())
    measured = [r for r in again.report["clusters"] if r["misalignment"] is not None]
    assert renamed.calls == len(measured) > 0 and 4.0 in {r["misalignment"] for r in measured}
    same = TopicMeasure(bad=5.0)
    same.definition = MISALIGNMENT_DEFINITION
    run_selection_round(_cfg(), corpus, same, SineBackend(), tmp_path, encoder=HashingEncoder())
    assert same.calls == 0


@pytest.mark.parametrize("bias", [0.5, 2.0])
def test_budget_loop_corrects_a_wrong_estimate(corpus, tmp_path, bias):
    """Estimates off by 2x either way: the loop synthesizes more parts until the real durations fit."""
    from nemo_salad.selection import DrawSequence, load_selection, select_and_synthesize

    ids, texts = [d.id for d in corpus], [d.text for d in corpus]
    backend = SineBackend(seconds_per_char=0.06)
    order = DrawSequence(np.zeros(len(ids), int), np.array([1.0]), seed=0)
    sel = select_and_synthesize(order, ids, texts, tmp_path, budget=120.0, unit="seconds", backend=backend,
                                estimate=lambda i: bias * 0.06 * len(texts[i]), shard_size=8)
    real = {c.id: c.duration for c in load_selection(tmp_path)}
    assert set(real) == set(sel.ids)
    assert sum(real.values()) == pytest.approx(sel.total) and 120.0 - sel.stop_cost < sel.total <= 120.0
    synthesized = sum(len(json.loads((tmp_path / p / "plan.json").read_text())["ids"]) for p in sel.parts)
    if bias > 1:  # over-estimated: the first part was too small, more parts followed
        assert len(sel.parts) >= 2
    else:  # under-estimated: the first part was too large, the real durations cut the selection short
        assert synthesized > len(sel.ids) + 1
    first = [order[i] for i in range(len(sel.ids))]
    assert sel.indices == first  # a prefix of the draw order


def test_real_cer_filter_that_hears_nothing_excludes_every_cluster(corpus, tmp_path):
    from nemo_salad.synthesis import CERFilter

    class Deaf:  # an ASR that transcribes every waveform as silence
        name = "deaf"

        def transcribe(self, waves, sample_rate=16000):
            return [""] * len(waves)

    with pytest.raises(ValueError, match="no cluster could be measured"):
        run_selection_round(_cfg(), corpus, TopicMeasure(), SineBackend(), tmp_path, encoder=HashingEncoder(),
                            asr_filter=CERFilter(Deaf(), max_cer=0.3))
    probe = json.loads(next((tmp_path / "probes").glob("c*/probe.json")).read_text())
    assert probe["n_written"] == 0 and probe["n_probe"] == 6
