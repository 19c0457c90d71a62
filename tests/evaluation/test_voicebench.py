"""VoiceBench MMSU from a local copy (save_to_disk, parquet, JSONL + wav): items, gold letters, the recorded audio
(not a synthesis) reaching the speech system, per-domain counts, counted skips, and the mmlu stand-in."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import soundfile as sf

from nemo_salad.evaluation import (
    IdentitySpeechEncoder,
    ScoringSettings,
    SpeechSystem,
    TextSystem,
    evaluate_benchmark,
)
from nemo_salad.evaluation.items import SkipItem
from nemo_salad.evaluation.voicebench import load_mmsu, parse_mc_prompt, read_mmsu

RATE = 16000
ROWS = {  # domain -> (question_id, prompt, reference, tone Hz or None = no audio)
    "biology": [
        (1, "Which organ pumps blood? A. heart B. lung C. skin D. bone", "A", 220.0),
        (2, "Which molecule carries genes?\nA. lipid\nB. DNA\nC. starch\nD. water", "B", 330.0),
        (3, "What is a cell? Please describe it in your own words.", "C", 440.0),  # no options: unparsed
    ],
    "law": [
        (7, "Who makes laws in a democracy? (A) the parliament (B) the police (C) the courts", "(C)", 550.0),
        (8, "What is a tort? A. a cake B. a civil wrong", "B", None),  # no recording: no_audio
    ],
}
GOOD = {"biology/1": ("A", 0, 220.0), "biology/2": ("B", 1, 330.0), "law/7": ("C", 2, 550.0)}


def _tone(freq: float, seconds: float = 0.25) -> np.ndarray:
    return (0.2 * np.sin(2 * np.pi * freq * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def _wav_bytes(freq: float) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, _tone(freq), RATE, format="WAV", subtype="FLOAT")  # float wav: samples round-trip exactly
    return buf.getvalue()


def _datasets(tmp_path):
    import datasets

    splits = {}
    for domain, rows in ROWS.items():
        splits[domain] = datasets.Dataset.from_dict({
            "question_id": [r[0] for r in rows], "prompt": [r[1] for r in rows], "reference": [r[2] for r in rows],
            "audio": [None if r[3] is None else {"bytes": _wav_bytes(r[3]), "path": None} for r in rows],
        }).cast_column("audio", datasets.Audio(sampling_rate=RATE))  # the hub's feature type (no torchcodec needed)
    return splits


@pytest.fixture()
def saved(tmp_path):
    import datasets

    path = tmp_path / "voicebench_mmsu"
    datasets.DatasetDict(_datasets(tmp_path)).save_to_disk(str(path))
    return path


@pytest.fixture()
def parquet_dir(tmp_path):
    root = tmp_path / "voicebench"
    (root / "mmsu").mkdir(parents=True)
    for domain, ds in _datasets(tmp_path).items():
        ds.to_parquet(str(root / "mmsu" / f"{domain}-00000-of-00001.parquet"))
    return root


@pytest.fixture()
def jsonl_dir(tmp_path):
    root = tmp_path / "jsonl"
    (root / "wav").mkdir(parents=True)
    for domain, rows in ROWS.items():
        lines = []
        for qid, prompt, ref, freq in rows:
            audio = None
            if freq is not None:
                audio = f"wav/{domain}_{qid}.wav"
                sf.write(root / audio, _tone(freq), RATE, subtype="FLOAT")
            lines.append(json.dumps({"question_id": qid, "prompt": prompt, "reference": ref, "audio": audio}))
        (root / f"{domain}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def _check_load(load, source):
    bench = load.benchmark
    assert (bench.name, bench.title, bench.source, bench.n_rows) == ("mmsu", "MMSU", str(source), 5)
    assert {it.id: (it.options[it.gold], it.gold) for it in bench.items} == {
        "biology/1": (" heart", 0), "biology/2": (" DNA", 1), "law/7": (" the courts", 2)}
    assert [it.group for it in bench.items] == ["biology", "biology", "law"]
    assert bench.items[1].spoken_texts == ("Which molecule carries genes? A. lipid B. DNA C. starch D. water",)
    assert bench.items[2].options == (" the parliament", " the police", " the courts")
    assert bench.items[0].preamble.endswith("about biology.\n\n")
    assert load.rows_per_domain == {"biology": 3, "law": 2}
    assert load.items_per_domain == {"biology": 2, "law": 1}
    assert load.skipped_per_domain == {"biology": {"unparsed_prompt": 1}, "law": {"no_audio": 1}}
    assert bench.skipped == {"unparsed_prompt": 1, "no_audio": 1} and not load.stand_in


class _NoSynthesis:
    """A fallback that fails the test if it is asked to voice a recorded text."""

    def __init__(self):
        self.asked = []

    def cuts_for(self, key, texts):
        self.asked.extend(texts)
        return {}


def _check_recorded_audio(load):
    fallback = _NoSynthesis()
    load.speech.fallback = fallback
    texts = [it.spoken_texts[0] for it in load.benchmark.items]
    cuts = load.speech.cuts_for("mmsu-test", [*texts, "Some other benchmark's question?"])
    assert fallback.asked == ["Some other benchmark's question?"]
    for item, text in zip(load.benchmark.items, texts, strict=True):
        cut = cuts[text]
        assert cut.custom["audio_source"] == "recorded" and cut.supervisions[0].text == text
        np.testing.assert_array_equal(cut.load_audio()[0], _tone(GOOD[item.id][2]))  # the row's own recording


def test_save_to_disk_layout(saved):
    load = load_mmsu(saved)
    _check_load(load, saved)
    _check_recorded_audio(load)


def test_parquet_layout(parquet_dir):
    load = load_mmsu(parquet_dir)
    _check_load(load, parquet_dir)
    _check_recorded_audio(load)


def test_jsonl_and_wav_folder_layout(jsonl_dir):
    load = load_mmsu(jsonl_dir)
    _check_load(load, jsonl_dir)
    _check_recorded_audio(load)


def test_the_harness_hears_the_recordings(saved, tiny_llm, byte_tok):
    """End to end: the speech system receives the recorded cuts, and with the identity encoder the speech
    condition equals the text condition exactly (the text read is the text the audio says)."""
    heard = []

    class Listening(IdentitySpeechEncoder):
        def encode_cuts(self, cuts):
            heard.extend((c.custom["audio_source"], c.duration) for c in cuts)
            return super().encode_cuts(cuts)

    load = load_mmsu(saved, answer_format="letter")
    assert load.benchmark.items[0].options == (" A", " B", " C", " D")
    systems = [TextSystem(tiny_llm, byte_tok), SpeechSystem(Listening(tiny_llm, byte_tok))]
    res = evaluate_benchmark(load.benchmark, systems, ScoringSettings(max_tokens=512, max_shots=1), load.speech)
    assert res.n_items == 3 and heard and all(h == ("recorded", 0.25) for h in heard)
    for rec in res.items:
        assert rec["systems"]["text_llm"]["scores"] == rec["systems"]["speech_model"]["scores"]


def test_domain_selection_and_bad_input(saved, tmp_path):
    load = load_mmsu(saved, domains=["law"])
    assert [it.id for it in load.benchmark.items] == ["law/7"] and load.rows_per_domain == {"law": 2}
    with pytest.raises(ValueError, match=r"no domain split\(s\) \['physics'\]; it has \['biology', 'law'\]"):
        load_mmsu(saved, domains=["physics"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmsu(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no VoiceBench MMSU data found"):
        read_mmsu(tmp_path / "empty")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "Q? A. x B. y", "reference": "A", "audio": "x.wav"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_mmsu(bad)
    unusable = tmp_path / "unusable.jsonl"
    unusable.write_text('{"prompt": "No options here.", "reference": "A", "audio": "x.wav"}\n')
    with pytest.raises(ValueError, match=r"no valid items in .*unusable\.jsonl .*unparsed_prompt"):
        load_mmsu(unusable)


@pytest.mark.parametrize("prompt, question, options", [
    ("What is 2+2? A. 3 B. 4", "What is 2+2?", ("3", "4")),
    ("Vitamin A. deficiency causes? A. night blindness B. scurvy C. rickets", "Vitamin A. deficiency causes?",
     ("night blindness", "scurvy", "rickets")),
    ("Pick one:\nA) red\nB) blue\nAnswer with the letter only.", "Pick one:", ("red", "blue")),
    ("Pick (A) red or (B) blue?", "Pick", ("red or", "blue?")),
    ("Choose. A: yes B: no", "Choose.", ("yes", "no")),
])
def test_prompt_parsing(prompt, question, options):
    parsed = parse_mc_prompt(prompt)
    assert (parsed.question, parsed.options) == (question, options)
    assert parsed.labels == tuple("ABCDEFGHIJ"[:len(options)])


@pytest.mark.parametrize("prompt", ["No labels at all.", "A. only one option", "A. x B. y (no question)"])
def test_unparseable_prompts_are_skip_items(prompt):
    with pytest.raises(SkipItem, match="unparsed_prompt"):
        parse_mc_prompt(prompt)


def test_without_a_local_copy_the_mmlu_stand_in_is_used():
    load = load_mmsu(None, n_items=6, seed=2)
    assert load.stand_in and load.speech is None and load.benchmark.name == "mmlu"
    assert len(load.benchmark.items) == 6 and sum(load.items_per_domain.values()) == 6
