"""One evaluation command over protocols, voices and seeds (tiny LLM, identity speech path, reference ASR, sine
speech): every config key changes what runs, mean ± std over seeds against the per-seed runs, intervals against
numpy, one row per condition, the generate protocol's fail rate, VoiceBench MMSU recordings and spoken
StoryCloze in the same report, and results.md stating protocol, shots, conditions, intervals and items."""

from __future__ import annotations

import csv
import json
import re
import zlib

import numpy as np
import pytest
import soundfile as sf

from nemo_salad.evaluation.config import run_evaluation
from nemo_salad.evaluation.summary import AVERAGE

SEEDS = [0, 1, 2]
VOICES = [{"name": "sine-slow", "tts": {"name": "sine", "seconds_per_char": 0.09}},
          {"name": "snr10", "snr_db": 10},
          {"name": "text-only", "tts": {"name": "transcript"}}]
REPS = 300
LEVEL = 0.9


def _base(tiny_hf_dir, out, **over):
    cfg = {"llm_hf_dir": str(tiny_hf_dir), "benchmarks": ["copa", "piqa"], "n_items": 8, "speech_model": "identity",
           "tts": {"name": "sine"}, "asr": {"name": "reference"}, "scoring": {"max_tokens": 300, "max_shots": 2},
           "output_dir": str(out), "speech_cache": str(out / "speech")}
    return {**cfg, **over}


@pytest.fixture(scope="module")
def full(tiny_hf_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run, paths = run_evaluation(_base(tiny_hf_dir, out, seeds=SEEDS, protocols=["loglik", "generate"],
                                      voices=VOICES, bootstrap=REPS, level=LEVEL, generation={"max_new_tokens": 3}))
    return run, paths, out


def _correct(res, bench: str, system: str) -> dict[str, float]:
    return {r["id"]: float(r["systems"][system]["correct"]) for r in res.benchmark(bench).items}


def test_seeds_mean_and_std_are_those_of_the_per_seed_runs(full):
    run, paths, _ = full
    main = {r.seed: r.results for r in run.loglik if r.condition == "default"}
    assert sorted(main) == SEEDS
    shots = {s: [r["shot_ids"] for r in res.benchmark("copa").items] for s, res in main.items()}
    assert shots[0] != shots[1] != shots[2]  # each seed drew other few-shot examples
    summary = run.summaries["loglik"]
    md = paths["md"].read_text()
    for name in ("text_llm", "speech_model"):
        for bench in ("copa", "piqa"):
            accs = [main[s].benchmark(bench).systems[name].primary for s in SEEDS]
            cell = summary.cell("default", name, bench)
            assert list(cell.per_seed.values()) == pytest.approx(accs)
            assert cell.mean == pytest.approx(sum(accs) / 3)
            assert cell.std == pytest.approx((sum((a - sum(accs) / 3) ** 2 for a in accs) / 2) ** 0.5)
        avg = [(main[s].benchmark("copa").systems[name].primary + main[s].benchmark("piqa").systems[name].primary) / 2
               for s in SEEDS]
        assert summary.cell("default", name, AVERAGE).mean == pytest.approx(np.mean(avg))
    piqa = summary.cell("default", "text_llm", "piqa")
    assert piqa.std > 0  # the seeds really changed an accuracy here
    assert f"{100 * piqa.mean:.1f} ± {100 * piqa.std:.1f} [" in md


def test_intervals_match_a_numpy_bootstrap_and_contain_the_point(full):
    run, _, _ = full
    main = {r.seed: r.results for r in run.loglik if r.condition == "default"}
    summary = run.summaries["loglik"]
    for bench in ("copa", "piqa"):
        per_seed = [_correct(main[s], bench, "text_llm") for s in SEEDS]
        values = np.array([np.mean([p[i] for p in per_seed]) for i in per_seed[0]])
        rng = np.random.default_rng(zlib.crc32(f"0/{bench}".encode()))  # run seed 0, benchmark name
        means = values[rng.integers(0, len(values), size=(REPS, len(values)))].mean(axis=1)
        low, high = np.percentile(means, [5, 95])  # level 0.9
        cell = summary.cell("default", "text_llm", bench)
        assert (cell.low, cell.high) == pytest.approx((low, high))
        assert cell.low <= cell.mean <= cell.high and cell.n == len(values) == 8
        gap = summary.gap("default", "speech_model", bench)  # the identity path: the paired gap is exactly 0
        assert (gap.mean, gap.low, gap.high) == (0.0, 0.0, 0.0)


def test_one_row_per_voice_and_identical_accuracy_where_the_text_is_the_same(full):
    run, paths, out = full
    assert [c.name for c in run.conditions] == ["default", "sine-slow", "snr10", "text-only"]
    summary = run.summaries["loglik"]
    for cond in ("sine-slow", "snr10", "text-only"):
        assert summary.cell(cond, "text_llm", "copa") is None  # text rows are scored once
        for name in ("speech_model", "cascade"):
            for bench in ("copa", "piqa", AVERAGE):
                assert summary.cell(cond, name, bench).per_seed == summary.cell("default", name, bench).per_seed
    spread = {(s.system, s.benchmark): s for s in summary.spread}
    assert set(spread[("speech_model", AVERAGE)].by_condition) == {"default", "sine-slow", "snr10", "text-only"}
    assert spread[("speech_model", "piqa")].range == 0.0 and spread[("cascade", AVERAGE)].std == 0.0
    md = paths["md"].read_text()
    for cond in ("sine-slow", "snr10", "text-only"):
        assert f"| Speech model on speech | {cond} |" in md and f"| ASR + text LLM (cascade) | {cond} |" in md
    assert "| Text LLM on text (topline) | sine-slow |" not in md
    assert "snr10 (tts sine, white noise at 10 dB SNR)" in md and "Spread over conditions" in md
    # the slow voice was synthesized with its own backend settings (another cache directory per benchmark)
    cached = [p.name.rsplit("-", 1)[0] for p in (out / "speech").iterdir() if p.is_dir()]
    assert len([c for c in cached if c.startswith("copa-validation")]) >= 2


def test_the_generate_protocol_reports_its_fail_rate_and_gaps(full):
    run, paths, _ = full
    assert [g.condition for g in run.generate] == ["default", "sine-slow", "snr10", "text-only"]
    main = run.generate[0].benchmarks
    summary = run.summaries["generate"]
    for bench in ("copa", "piqa"):
        recs = main[bench]["text_llm"]["records"]
        assert summary.cell("default", "text_llm", bench).mean == pytest.approx(np.mean([r["correct"] for r in recs]))
    md = paths["md"].read_text()
    section = md[md.index("## Generate-then-extract"):]
    assert "| System | Condition | COPA | PIQA | Avg | Fail rate (%) |" in section
    failed = sum(main[b]["text_llm"]["n_failed"] for b in ("copa", "piqa"))
    n = sum(main[b]["text_llm"]["n"] for b in ("copa", "piqa"))
    row = next(line for line in section.splitlines() if line.startswith("| Text LLM on text (topline) | default |"))
    assert row.endswith(f"| {100 * failed / n:.1f} |")
    assert "Gap (%) = text topline − system" in section and "Fail rate per benchmark" in section
    assert "shots: 0; seed 0" in section and "at most 3 new tokens" in section
    assert max(r["n_new_tokens"] for out in main.values() for o in out.values() for r in o["records"]) <= 3


def test_results_md_states_protocol_shots_conditions_intervals_and_items_for_every_table(full):
    _, paths, _ = full
    lines = paths["md"].read_text().splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("| System |") or line.startswith("| Benchmark |")]
    assert len(heads) >= 10
    for i in heads:
        caption = next(line for line in reversed(lines[max(0, i - 4):i]) if line.startswith("_"))
        assert re.search(r"^_(loglik|generate).* · shots: .* · conditions: default, sine-slow, snr10, text-only · "
                         rf"intervals: 90% bootstrap, {REPS} resamples · items: COPA 8, PIQA 8_$", caption), caption
    assert any("seeds 0, 1, 2" in line for line in lines)
    data = json.loads(paths["json"].read_text())
    assert data["protocols"] == ["loglik", "generate"]
    assert len(data["loglik"]["runs"]) == 3 * 4 - 1  # every seed and condition but the top-level one
    assert {c["condition"] for c in data["generate"]["summary"]["cells"]} == {"default", "sine-slow", "snr10",
                                                                             "text-only"}
    from PIL import Image

    with Image.open(paths["png"]) as im:
        assert im.size[1] > 800  # a panel per protocol


def _storycloze_csv(path):
    rows = [["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
             "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"],
            ["s1", "Tom got a dog.", "He walked it.", "It ran off.", "Tom searched.", "He found it.", "He sang.", "1"],
            ["s2", "Amy baked.", "It rose.", "It was hot.", "She waited.", "It smelled of rust.", "It was good.", "2"],
            ["s3", "Sam lost keys.", "He looked.", "She laughed.", "They were there.", "He felt silly.", "He flew.",
             "1"]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _mmsu_jsonl(root):
    (root / "wav").mkdir(parents=True)
    prompts = [("Which organ pumps blood? A. heart B. lung C. skin", "A"),
               ("Which molecule carries genes? A. lipid B. DNA", "B"),
               ("What do plants take in? A. oxygen B. nitrogen C. carbon dioxide", "C"),
               ("Which is a bone? A. femur B. liver", "A")]
    lines = []
    for n, (prompt, ref) in enumerate(prompts):
        tone = (0.2 * np.sin(2 * np.pi * (220 + 50 * n) * np.arange(4000) / 16000)).astype(np.float32)
        sf.write(root / "wav" / f"{n}.wav", tone, 16000, subtype="FLOAT")
        lines.append(json.dumps({"question_id": n, "prompt": prompt, "reference": ref, "audio": f"wav/{n}.wav"}))
    (root / "biology.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_voicebench_mmsu_recordings_and_spoken_storycloze_join_the_report(tiny_hf_dir, tmp_path):
    mmsu = _mmsu_jsonl(tmp_path / "mmsu")
    cloze = _storycloze_csv(tmp_path / "cloze.csv")
    run, paths = run_evaluation(_base(
        tiny_hf_dir, tmp_path, benchmarks=["mmsu", "copa"], n_items=4, bootstrap=0, mmsu_voicebench=str(mmsu),
        storycloze_spoken={"path": str(cloze), "kinds": ["sSC"]}))
    bench = run.primary.benchmark("mmsu")
    assert (bench.source, bench.n_items) == (str(mmsu), 4)
    assert bench.items[0]["spoken"] == ["Which organ pumps blood? A. heart B. lung C. skin"]
    # the recordings replaced synthesis for the mmsu texts only: nothing of mmsu went through the sine backend
    synthesized = [p.name for p in (tmp_path / "speech").iterdir() if p.is_dir()]
    assert any(n.startswith("copa-") for n in synthesized) and not any(n.startswith("mmsu-") for n in synthesized)
    assert [(r.name, r.mode) for r in run.storycloze] == [("sSC", "continuation"), ("sSC", "full_story")]
    summary = run.summaries["storycloze"]
    assert summary.cell("default", "speech_model", "sSC/full_story") is None  # not applicable
    res = run.storycloze[0]
    assert summary.cell("default", "text_llm", "sSC/continuation").mean == pytest.approx(
        res.systems["text_llm"].accuracy)
    md = paths["md"].read_text()
    section = md[md.index("## Spoken StoryCloze"):]
    assert "| System | sSC continuation | sSC full story |" in section
    assert re.search(r"\| Speech model on speech \| [\d.]+ \| n/a \|", section)
    assert "intervals: no intervals" in md and " [" not in md.split("## Log-likelihood")[1].split("Few-shot")[0]
    data = json.loads(paths["json"].read_text())
    assert len(data["storycloze_spoken"]["results"]) == 2 and data["benchmarks"]["mmsu"]["source"] == str(mmsu)
