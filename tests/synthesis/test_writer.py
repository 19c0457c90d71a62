"""The Shar writer with the deterministic SineBackend: layout, pairing of audio and text, batching, skips."""

from __future__ import annotations

import gzip
import json
import math

import numpy as np
import pytest
from lhotse import CutSet
from scipy.signal import resample_poly

from nemo_salad.synthesis import SineBackend, load_synthesized, synthesize_to_shar, text_cuts
from nemo_salad.synthesis.shar_store import output_lock, shar_fields
from tests.synthesis.helpers import RecordingBackend, dominant_frequency

WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike".split()


def _texts(n: int) -> list[tuple[str, str]]:
    """Texts of varied lengths (1..13 words) with distinct ids."""
    return [(f"utt-{i:03d}", " ".join(WORDS[: 1 + (i * 7) % len(WORDS)]) + f" number {i}.") for i in range(n)]


def test_writes_valid_shar_with_paired_audio_and_provenance(tmp_path):
    items = _texts(23)
    backend = SineBackend(sample_rate=22050, seconds_per_char=0.03)  # native rate != stored rate
    report = synthesize_to_shar(text_cuts(items, source="unit"), backend, tmp_path, batch_size=4, shard_size=10,
                                progress=False)
    assert report.n_written == 23 and report.n_skipped == {} and report.n_shards == 3
    fields = shar_fields(tmp_path)
    assert [p.rsplit("/", 1)[-1] for p in fields["recording"]] == [f"recording.{i:06d}.tar" for i in range(3)]
    texts = dict(items)
    cuts = list(load_synthesized(tmp_path))
    assert sorted(c.id for c in cuts) == sorted(texts)
    total = 0.0
    for cut in cuts:
        text = texts[cut.id]
        audio = cut.load_audio()
        assert audio.shape == (1, cut.num_samples) and cut.sampling_rate == 16000
        expected = backend.num_samples(text) * 16000 / 22050  # resampled length
        assert abs(cut.num_samples - expected) <= 1
        # the tone identifies the text: audio and transcript belong together
        assert abs(dominant_frequency(audio[0], 16000) - SineBackend.frequency(text)) < 3.0
        # resampled audio agrees with an independent polyphase resampling of the native tone (FLAC: 16-bit)
        reference = resample_poly(backend.synthesize([text])[0].astype(np.float64), 320, 441)
        n = min(len(reference), cut.num_samples)
        assert np.abs(audio[0, 200 : n - 200] - reference[200 : n - 200]).max() < 5e-3
        sup = cut.supervisions[0]
        assert (sup.text, sup.start, sup.duration, sup.recording_id) == (text, 0.0, cut.duration, cut.id)
        assert cut.custom["tts_backend"] == "sine" and cut.custom["tts_checkpoint"] == "sine:0.03s/char"
        assert cut.custom["tts_sample_rate"] == 22050 and cut.custom["tts_voice"] == ""
        assert (cut.custom["source_id"], cut.custom["source"]) == (cut.id, "unit")
        total += cut.duration
    assert report.audio_seconds == pytest.approx(total, rel=1e-6)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["n_written"] == 23 and saved["provenance"]["backend"] == "sine"
    assert report.rtf == pytest.approx(report.wall_seconds / report.audio_seconds)
    # the manifest is plain lhotse Shar: readable without our loader too
    assert len(list(CutSet.from_shar(fields=fields))) == 23


def test_batches_are_length_sorted_within_a_shard(tmp_path):
    items = _texts(20)
    backend = RecordingBackend()
    synthesize_to_shar(text_cuts(items), backend, tmp_path, batch_size=3, shard_size=8, progress=False)
    assert all(len(call) <= 3 for call in backend.calls)
    assert sum(len(c) for c in backend.calls) == 20
    flat_by_shard, start = [], 0
    for size in (8, 8, 4):  # one shard per window of 8 items, sorted longest first inside it
        window = [t for _, t in items[start : start + size]]
        flat_by_shard.append(sorted(window, key=len, reverse=True))
        start += size
    calls = [t for call in backend.calls for t in call]
    assert [len(t) for t in calls] == [len(t) for shard in flat_by_shard for t in shard]


def test_bad_inputs_are_skipped_with_reasons_and_never_written(tmp_path, caplog):
    items = [
        ("ok-1", "A good sentence."),
        ("empty", ""),
        ("blank", " \n\t "),
        ("punct", "?!... --"),
        ("long", "word " * 200),
        ("bytes", b"caf\xe9 au lait"),
        ("ok-2", "Another good one."),
        ("ok-1", "A duplicate id."),
        ("silent", "the backend returns nothing for this"),
        ("boom", "the backend raises on this one"),
        ("ok-3", "Third good sentence."),
    ]
    backend = RecordingBackend(silent_on=["the backend returns nothing for this"],
                               fail_on=["the backend raises on this one"])
    with caplog.at_level("WARNING"):
        report = synthesize_to_shar(text_cuts(items), backend, tmp_path, batch_size=4, max_chars=500,
                                    progress=False)
    assert report.n_written == 3
    assert report.n_skipped == {"duplicate_id": 1, "empty_audio": 1, "empty_text": 2, "invalid_utf8": 1,
                                "punctuation_only": 1, "synthesis_error": 1, "too_long": 1}
    cuts = list(load_synthesized(tmp_path))
    assert sorted(c.id for c in cuts) == ["ok-1", "ok-2", "ok-3"]
    assert next(c for c in cuts if c.id == "ok-1").supervisions[0].text == "A good sentence."  # first one wins
    assert all(c.num_samples > 0 for c in cuts)
    dropped = [json.loads(line) for line in (tmp_path / "dropped.000000.jsonl").read_text().splitlines()]
    assert {d["id"]: d["reason"] for d in dropped} == {"empty": "empty_text", "blank": "empty_text",
                                                       "punct": "punctuation_only", "long": "too_long",
                                                       "bytes": "invalid_utf8", "silent": "empty_audio",
                                                       "boom": "synthesis_error"}
    logged = caplog.text
    for cut_id in ("empty", "punct", "long", "bytes", "silent", "boom"):
        assert f"skipped {cut_id!r}" in logged
    assert "skipped 'ok-1': duplicate_id" in logged


def test_failing_first_text_of_the_first_batch_costs_only_itself(tmp_path):
    items = [("long", "this long text is the first one synthesized"), ("a", "Fine."), ("b", "Also fine.")]
    backend = RecordingBackend(fail_on=[items[0][1]])
    report = synthesize_to_shar(text_cuts(items), backend, tmp_path, batch_size=3, progress=False)
    assert (report.n_written, report.n_skipped) == (2, {"synthesis_error": 1})
    assert backend.calls[:2] == [[items[0][1], "Also fine.", "Fine."], [items[0][1]]]  # batch, then one by one


def test_backend_broken_for_everything_raises(tmp_path):
    backend = RecordingBackend(fail_on=["One.", "Two."])
    with pytest.raises(RuntimeError, match="failed on every text of the first batch"):
        synthesize_to_shar(text_cuts([("a", "One."), ("b", "Two.")]), backend, tmp_path, progress=False)
    assert shar_fields(tmp_path)["cuts"] == []  # nothing committed


def test_all_dropped_window_still_commits_its_drops(tmp_path):
    items = [("a", "Fine."), ("b", "!!"), ("c", "??")]
    report = synthesize_to_shar(text_cuts(items), SineBackend(), tmp_path, shard_size=1, progress=False)
    assert report.n_written == 1 and report.n_skipped == {"punctuation_only": 2}
    again = synthesize_to_shar(text_cuts(items), SineBackend(), tmp_path, shard_size=1, progress=False)
    assert (again.n_written, again.n_resumed, again.n_skipped) == (0, 3, {})  # drops were not redone
    assert [c.id for c in load_synthesized(tmp_path)] == ["a"]
    with gzip.open(tmp_path / "cuts.000000.jsonl.gz", "rt") as f:
        assert json.loads(f.readline())["id"] == "a"


def test_second_writer_on_same_dir_is_refused(tmp_path):
    with output_lock(tmp_path):
        with pytest.raises(RuntimeError, match="another synthesis run is writing"):
            synthesize_to_shar(text_cuts([("a", "Hi.")]), SineBackend(), tmp_path, progress=False)


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        synthesize_to_shar(text_cuts([("a", "Hi.")]), SineBackend(), tmp_path, batch_size=0)


def test_progress_bar_reports_items_and_rtf(tmp_path, capsys):
    synthesize_to_shar(text_cuts(_texts(5)), SineBackend(), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "5/5" in err and "items/s=" in err and "RTF=" in err
    assert math.isfinite(json.loads((tmp_path / "report.json").read_text())["items_per_second"])
