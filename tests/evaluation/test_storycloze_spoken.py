"""Spoken StoryCloze: pairs from the official CSV (sSC, tSC) and from a manifest with recordings, slamkit's
mean-log-likelihood comparison against a float64 hand computation, ties, the identity speech path, and bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import soundfile as sf
import torch

from nemo_salad.evaluation import (
    CascadeSystem,
    IdentitySpeechEncoder,
    SpeechSystem,
    SynthesizedSpeech,
    TextSystem,
    TranscriptOnlySpeech,
)
from nemo_salad.evaluation.asr import ReferenceTranscriber
from nemo_salad.evaluation.storycloze_spoken import (
    NOT_APPLICABLE,
    StoryClozeSet,
    StoryPair,
    evaluate_story_cloze,
    load_spoken_storycloze,
    pair_outcome,
    read_pair_manifest,
    storycloze_pairs,
)

COLUMNS = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
           "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]
STORIES = [
    ["s1", "Tom got a dog.", "He walked it daily.", "One day it ran off.", "Tom searched all night.",
     "He found it at dawn.", "He bought a cat.", "1"],
    ["s2", "Amy baked bread.", "She let it rise.", "The oven was hot.", "She waited an hour.",
     "The kitchen smelled of rust.", "The loaf came out golden.", "2"],
    ["s3", "Sam lost his keys.", "He looked everywhere.", "His wife laughed.", "They were in the door.",
     "Sam felt silly.", "Sam flew to Mars.", "1"],
]
CONTEXT = {s[0]: " ".join(s[1:5]) for s in STORIES}
RIGHT = {s[0]: s[4 + int(s[7])] for s in STORIES}
WRONG = {s[0]: s[7 - int(s[7])] for s in STORIES}


@pytest.fixture()
def cloze_csv(tmp_path):
    path = tmp_path / "cloze_test_test__spring2016.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *STORIES])
    return path


def test_csv_gives_ssc_and_tsc_pairs(cloze_csv):
    ssc = load_spoken_storycloze(cloze_csv, "sSC")
    assert ssc.name == "sSC" and ssc.n_rows == 3 and ssc.skipped == {}
    assert [(p.id, p.context, p.correct_ending, p.incorrect_ending) for p in ssc.pairs] == [
        (sid, CONTEXT[sid], RIGHT[sid], WRONG[sid]) for sid in ("s1", "s2", "s3")]
    assert ssc.pairs[0].correct_story == CONTEXT["s1"] + " " + RIGHT["s1"]
    tsc = storycloze_pairs(cloze_csv, "tSC", seed=0)
    donors = {p.id: next(sid for sid, end in RIGHT.items() if end == p.incorrect_ending) for p in tsc.pairs}
    assert all(donor != sid for sid, donor in donors.items())  # another story's correct ending
    assert sorted(donors.values()) == ["s1", "s2", "s3"]  # each ending lent once
    assert [p.correct_ending for p in tsc.pairs] == [RIGHT[s] for s in ("s1", "s2", "s3")]
    again = storycloze_pairs(cloze_csv, "tSC", seed=0)
    assert again.pairs == tsc.pairs
    messy = cloze_csv.with_name("messy.csv")
    with open(messy, "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, [*STORIES[0][:5], " He found  it\tat dawn. ", "A cafe\u0301.", "1"],
                                 [*STORIES[1][:5], "It rose.", "!?", "1"]])
    messy_set = storycloze_pairs(messy)  # endings normalised as the synthesis layer stores them
    assert [(p.correct_ending, p.incorrect_ending) for p in messy_set.pairs] == [
        ("He found it at dawn.", "A caf\u00e9.")]
    assert messy_set.skipped == {"empty_option": 1}  # an ending with nothing to say
    assert [p.id for p in storycloze_pairs(cloze_csv, "sSC", n_items=2, seed=1).pairs] in (
        ["s1", "s2"], ["s1", "s3"], ["s2", "s3"])


def _hand_mean_loglik(llm, context: str, ending: str, mode: str) -> float:
    """float64 mean log-probability per scored token, from one plain forward of the byte ids (the tiny model's
    tokenizer is bytes, so ids are written out here without any project code)."""
    if mode == "continuation":
        ctx, cont = list((" " + context).encode()), list((" " + ending).encode())
        ids, first = ctx + cont, len(ctx)
    else:
        ids, first = list((" " + context + " " + ending).encode()), 1
    with torch.no_grad():
        logp = llm(input_ids=torch.tensor([ids]))[0].double().log_softmax(-1)  # (T, V)
    picked = [logp[t - 1, ids[t]].item() for t in range(first, len(ids))]
    return sum(picked) / len(picked)


@pytest.mark.parametrize("mode", ["continuation", "full_story"])
def test_scores_match_a_float64_hand_computation(tiny_llm, byte_tok, cloze_csv, mode):
    data = storycloze_pairs(cloze_csv, "tSC")
    res = evaluate_story_cloze(data, [TextSystem(tiny_llm, byte_tok)], mode, chunk_pairs=2)
    expected_outcomes = []
    for pair, rec in zip(data.pairs, res.records, strict=True):
        want = [_hand_mean_loglik(tiny_llm, pair.context, e, mode) for e in (pair.correct_ending,
                                                                              pair.incorrect_ending)]
        got = rec["systems"]["text_llm"]
        assert got["mean_loglik"] == pytest.approx(want, abs=1e-5), pair.id
        assert abs(want[0] - want[1]) > 1e-3  # the comparison below is decided, not a near-tie
        expected_outcomes.append(1.0 if want[0] > want[1] else 0.0)
        assert got["outcome"] == expected_outcomes[-1]
        n_end = [len((" " + e).encode()) for e in (pair.correct_ending, pair.incorrect_ending)]
        n_story = [len((" " + pair.context + " " + e).encode()) - 1 for e in (pair.correct_ending,
                                                                           pair.incorrect_ending)]
        assert got["n_tokens"] == (n_end if mode == "continuation" else n_story)
    assert res.systems["text_llm"].accuracy == pytest.approx(sum(expected_outcomes) / 3)
    assert res.n_pairs == 3 and res.mode == mode


@pytest.mark.parametrize("mode", ["continuation", "full_story"])
def test_identical_versions_tie_and_count_half(tiny_llm, byte_tok, mode):
    pairs = [StoryPair("same", "Tom got a dog. He walked it.", "He found it.", "He found it."),
             StoryPair("diff", "Amy baked bread. It rose.", "It was golden.", "It sang opera loudly.")]
    res = evaluate_story_cloze(StoryClozeSet("tSC", "inline", pairs, 2), [TextSystem(tiny_llm, byte_tok)], mode)
    same = res.records[0]["systems"]["text_llm"]
    assert same["mean_loglik"][0] == same["mean_loglik"][1] and same["outcome"] == 0.5
    other = res.records[1]["systems"]["text_llm"]["outcome"]
    assert other in (0.0, 1.0)
    scores = res.systems["text_llm"]
    assert scores.n_ties == 1 and scores.accuracy == (0.5 + other) / 2
    assert pair_outcome(-1.25, -1.25) == 0.5


def _systems(llm, tok, encoder=None):
    return [TextSystem(llm, tok), SpeechSystem(encoder or IdentitySpeechEncoder(llm, tok)),
            CascadeSystem(llm, tok, ReferenceTranscriber())]


def _entries(res, name):
    return [rec["systems"][name] for rec in res.records]


def test_identity_speech_path_gives_the_text_result_exactly(tiny_llm, byte_tok, cloze_csv, tmp_path):
    data = storycloze_pairs(cloze_csv, "sSC")
    res = evaluate_story_cloze(data, _systems(tiny_llm, byte_tok), "continuation", TranscriptOnlySpeech())
    text = [(e["mean_loglik"], e["outcome"]) for e in _entries(res, "text_llm")]
    for other in ("speech_model", "cascade"):
        assert [(e["mean_loglik"], e["outcome"]) for e in _entries(res, other)] == text
        assert res.systems[other].accuracy == res.systems["text_llm"].accuracy
    # through the synthesis layer's Shar cache (audio cuts) as well
    from nemo_salad.synthesis import SineBackend

    synth = evaluate_story_cloze(data, _systems(tiny_llm, byte_tok)[:2], "continuation",
                                 SynthesizedSpeech(SineBackend(), root=tmp_path / "cache"))
    assert [e["mean_loglik"] for e in _entries(synth, "speech_model")] == [t for t, _ in text]

    class Noisy(IdentitySpeechEncoder):  # negative control: the exactness above is not vacuous
        def encode_cuts(self, cuts):
            return [e + 1e-3 for e in super().encode_cuts(cuts)]

    noisy = evaluate_story_cloze(data, _systems(tiny_llm, byte_tok, Noisy(tiny_llm, byte_tok))[:2],
                                 "continuation", TranscriptOnlySpeech())
    diffs = [abs(a - b) for e, (t, _) in zip(_entries(noisy, "speech_model"), text, strict=True)
             for a, b in zip(e["mean_loglik"], t, strict=True)]
    assert max(diffs) > 1e-5


def test_all_speech_mode_has_no_speech_model_row_and_the_cascade_reads_transcripts(tiny_llm, byte_tok, cloze_csv):
    data = storycloze_pairs(cloze_csv, "tSC")
    res = evaluate_story_cloze(data, _systems(tiny_llm, byte_tok), "full_story", TranscriptOnlySpeech())
    speech = res.systems["speech_model"]
    assert (speech.applicable, speech.accuracy, speech.note) == (False, None, NOT_APPLICABLE)
    assert all("speech_model" not in rec["systems"] for rec in res.records)
    assert _entries(res, "cascade") == [{**e, "transcripts": [p.correct_story, p.incorrect_story]}
                                        for e, p in zip(_entries(res, "text_llm"), data.pairs, strict=True)]


def _wav(path, seconds: float, rate: int = 16000):
    sf.write(path, 0.1 * np.sin(2 * np.pi * 330 * np.arange(int(seconds * rate)) / rate), rate)
    return path.name


def _write_manifest(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class _Spy(ReferenceTranscriber):
    """Perfect ASR that records what it heard: (audio source, duration) per cut."""

    def __init__(self):
        self.heard = {}

    def transcribe(self, cuts):
        for c in cuts:
            self.heard[c.supervisions[0].text] = ((c.custom or {}).get("audio_source"), round(c.duration, 3))
        return super().transcribe(cuts)


def test_manifest_pairs_use_their_recordings(tiny_llm, byte_tok, tmp_path):
    story = "Tom got a dog. He walked it daily."
    rows = [{"id": "a", "correct": {"text": story + " He loved it.", "audio": _wav(tmp_path / "a_c.wav", 1.5)},
             "incorrect": {"text": story + "  He sold the moon.", "audio": _wav(tmp_path / "a_i.wav", 1.25)},
             "context": {"audio": _wav(tmp_path / "a_ctx.wav", 1.0, rate=22050)}},
            {"id": "b", "correct": {"text": "Amy baked. It rose. It was golden."},
             "incorrect": {"text": "Amy baked. It rose. It sang."},
             "context": {"text": "Amy baked."}}]
    data = read_pair_manifest(_write_manifest(tmp_path / "pairs.jsonl", rows))
    a, b = data.pairs
    assert (a.context, a.correct_ending, a.incorrect_ending) == (story, "He loved it.", "He sold the moon.")
    assert (b.context, b.correct_ending, b.incorrect_ending) == ("Amy baked.", "It rose. It was golden.",
                                                                 "It rose. It sang.")
    assert data.name == "pairs" and a.correct_audio == str(tmp_path / "a_c.wav")
    spy = _Spy()
    systems = [TextSystem(tiny_llm, byte_tok), CascadeSystem(tiny_llm, byte_tok, spy)]
    evaluate_story_cloze(data, systems, "continuation", TranscriptOnlySpeech())
    assert spy.heard == {story: ("recorded", 1.0), "Amy baked.": (None, 0.6)}  # b's context: the fallback source
    spy.heard.clear()
    res = evaluate_story_cloze(data, systems, "full_story", TranscriptOnlySpeech())
    assert spy.heard[a.correct_story] == ("recorded", 1.5) and spy.heard[a.incorrect_story] == ("recorded", 1.25)
    assert spy.heard[b.correct_story][0] is None
    assert _entries(res, "cascade")[0]["mean_loglik"] == _entries(res, "text_llm")[0]["mean_loglik"]
    with pytest.raises(ValueError, match="need a SpokenSource"):
        evaluate_story_cloze(data, systems, "continuation")  # b's context has no recording and no source


GOOD = {"id": "x", "correct": {"text": "A b. He won."}, "incorrect": {"text": "A b. He lost."}}


@pytest.mark.parametrize("row, error, match", [
    ({"id": "x", "incorrect": GOOD["incorrect"]}, ValueError, r"pairs\.jsonl:1: field 'correct' must be an object"),
    ({**GOOD, "incorrect": {"text": "  "}}, ValueError, r"pairs\.jsonl:1: incorrect\.text is missing or empty"),
    ({**GOOD, "correct": {"text": "A b. He won.", "audio": "nope.wav"}}, FileNotFoundError,
     r"pairs\.jsonl:1: correct\.audio .*nope\.wav does not exist"),
    ({**GOOD, "incorrect": {"text": "X y. He lost."}}, ValueError, r"pairs\.jsonl:1: .*share no first sentence"),
    ({**GOOD, "context": {"text": "Q r."}}, ValueError, r"pairs\.jsonl:1: context\.text 'Q r\.' is not the start"),
])
def test_bad_manifest_rows_name_the_file_line_and_field(tmp_path, row, error, match):
    with pytest.raises(error, match=match):
        read_pair_manifest(_write_manifest(tmp_path / "pairs.jsonl", [row]))


def test_other_bad_input(tmp_path, cloze_csv, tiny_llm, byte_tok):
    bad = tmp_path / "pairs.jsonl"
    bad.write_text(json.dumps(GOOD) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"pairs\.jsonl:2: not valid JSON"):
        load_spoken_storycloze(bad)
    _write_manifest(bad, [GOOD, GOOD])
    with pytest.raises(ValueError, match=r"duplicate pair ids \['x'\]"):
        read_pair_manifest(bad)
    with pytest.raises(ValueError, match=r"kind='xSC'; expected one of \('sSC', 'tSC'\)"):
        storycloze_pairs(cloze_csv, "xSC")
    one = tmp_path / "one.csv"
    with open(one, "w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, STORIES[0], [*STORIES[1][:7], "3"]])
    assert storycloze_pairs(one, "sSC").skipped == {"gold_out_of_range": 1}
    with pytest.raises(ValueError, match="tSC needs at least two valid stories"):
        storycloze_pairs(one, "tSC")
    data = storycloze_pairs(cloze_csv)
    with pytest.raises(ValueError, match="mode='speech'; expected one of"):
        evaluate_story_cloze(data, [TextSystem(tiny_llm, byte_tok)], "speech")
    with pytest.raises(ValueError, match="need a SpokenSource"):
        evaluate_story_cloze(data, _systems(tiny_llm, byte_tok)[:2])
