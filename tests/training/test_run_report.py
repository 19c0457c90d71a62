"""The run's start/end report: spoken-benchmark accuracy of the topline and the trained model, with F and M."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nemo_salad.callbacks import GapReport, RunReport
from nemo_salad.evaluation import ScoringSettings, SpeechSystem, TextSystem, evaluate, load_benchmark
from nemo_salad.recipes.train import build
from tests.helpers.tone_speech import tone_cuts
from tests.training.conftest import compose, tiny_overrides

LORA = "model.llm.lora={rank: 4, alpha: 8, targets: [linear_qkv, linear_proj, linear_fc1, linear_fc2], dropout: 0.0}"


class ToneSpeech:
    """Voices benchmark texts with the tone code the tiny model is trained on."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def cuts_for(self, key, texts):
        unique = sorted(set(texts))
        return dict(zip(unique, tone_cuts(unique, self.root / key, prefix="t"), strict=True))


def _item_scores(path: Path, system: str) -> dict[str, list[float]]:
    body = json.loads(path.read_text())
    return {f"{b}/{it['id']}": it["systems"][system]["scores"]["sum"]
            for b, bench in body["benchmarks"].items() for it in bench["items"]}


@pytest.mark.slow
def test_report_at_start_validation_and_end_matches_direct_scoring(tone_corpus, tmp_path):
    cfg = compose(tiny_overrides(tone_corpus, tmp_path / "exp", max_steps=40) + ["model/teacher=shared", LORA])
    trainer, model, data = build(cfg)
    gap = next(cb for cb in trainer.callbacks if isinstance(cb, GapReport))
    settings = ScoringSettings(max_tokens=1500, max_shots=1)
    report = RunReport(gap, ToneSpeech(tmp_path / "speech"), benchmarks=["copa", "arc_easy"], n_items=6,
                       settings=settings, every_n_val=1, out_dir=tmp_path / "report")
    trainer.callbacks.append(report)
    trainer.fit(model, datamodule=data)

    body = json.loads((tmp_path / "report" / "run_report.json").read_text())
    points = body["points"]
    assert [(p["label"], p["step"]) for p in points] == [("start", 0), ("validation", 30), ("end", 40)]
    history = {h["step"]: h for h in gap.history}  # step 40 is no validation step: the report measured it
    for p in points:
        assert p["misalignment"] == history[p["step"]]["misalignment"]
        assert p["forgetting"] == history[p["step"]]["forgetting"]
    assert points[0]["forgetting"] == 0.0 and points[-1]["forgetting"] > 0  # LoRA moved the student

    # the topline was scored once (same prompts later) and is the original LLM (LoRA off): scored again after
    # training, its item scores are those of step 0
    assert {p["accuracy"]["copa"]["text"] for p in points} == {points[0]["accuracy"]["copa"]["text"]}
    end_body = json.loads((tmp_path / "report" / "run_report" / "step_40" / "results.json").read_text())
    assert [s["name"] for s in end_body["systems"]] == ["speech_model"]
    check = RunReport(gap, ToneSpeech(tmp_path / "speech"), benchmarks=["copa", "arc_easy"], n_items=6,
                      settings=settings, out_dir=tmp_path / "check", reuse_topline=False)
    check.measure(trainer, model, "check")
    top0 = _item_scores(tmp_path / "report" / "run_report" / "step_0" / "results.json", "text_llm")
    top40 = _item_scores(tmp_path / "check" / "run_report" / "step_40" / "results.json", "text_llm")
    assert top0 == top40 and len(top0) == 12
    assert check.points[0]["accuracy"] == points[-1]["accuracy"]

    # the end point is what scoring the trained model directly gives; the student's own LLM scores differ
    model.eval()
    benches = [load_benchmark("copa", n_items=6), load_benchmark("arc_easy", n_items=6)]
    with torch.no_grad():
        direct = evaluate(benches, [TextSystem(model.llm, model.tokenizer, name="student_text"), SpeechSystem(model)],
                          settings, ToneSpeech(tmp_path / "speech"))
    for b in direct.benchmarks:
        assert points[-1]["accuracy"][b.name]["speech"] == b.systems["speech_model"].primary
    student = {f"{b.name}/{it['id']}": it["systems"]["student_text"]["scores"]["sum"]
               for b in direct.benchmarks for it in b.items}
    assert student.keys() == top40.keys() and student != top40

    table = (tmp_path / "report" / "run_report.md").read_text().splitlines()
    assert table[0].startswith("| point | step | min | F | M | COPA text | COPA speech | COPA gap | ARC-E text")
    rows = [line for line in table[2:] if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in rows] == ["start", "validation", "end"]
    shots = {b: points[-1]["shots"][b] for b in ("copa", "arc_easy")}  # each system's own few-shot count
    assert table[-1] == ("Few-shot examples per item (mean, last point): " + "; ".join(
        f"{t} text {shots[b]['text']:.2f}, speech {shots[b]['speech']:.2f}" for t, b in (("COPA", "copa"),
                                                                                           ("ARC-E", "arc_easy"))))
    assert (tmp_path / "report" / "run_report.png").stat().st_size > 10_000


def test_report_config_is_checked_by_key():
    from nemo_salad.recipes.validate import training_config_problems

    problems = training_config_problems({"model": {"teacher": {"mode": "none"}},
                                         "report": {"n_items": 0, "every_n_val": -1, "benchmarks": ["copa", "arc"],
                                                    "scoring": {"shots_modality": "audio", "max_shots": -2}}})
    assert problems[:5] == [
        "report is set but model.teacher.mode=none: the report's text topline is the original LLM (use mode copy or "
        "shared, or report=null)",
        "report.benchmarks: 'arc': expected one of ['arc_challenge', 'arc_easy', 'copa', 'hellaswag', 'jsonl', 'mmlu', "
        "'mmsu', 'openbookqa', 'piqa', 'storycloze']",
        "report.n_items=0: expected an integer >= 1", "report.every_n_val=-1: expected an integer >= 0",
        "report.scoring.max_shots=-2: expected an integer >= 0"]
    assert problems[5:] == ["report.scoring.shots_modality='audio': expected one of ['speech', 'text']"]
    assert training_config_problems({"model": {"teacher": {"mode": "none"}}, "report": None}) == []


@pytest.mark.slow
def test_resumed_run_keeps_its_points_and_a_fresh_run_starts_anew(tone_corpus, tmp_path):
    settings = ScoringSettings(max_tokens=1500, max_shots=0)

    def run(max_steps):
        trainer, model, data = build(compose(tiny_overrides(tone_corpus, tmp_path / "exp", max_steps=max_steps)
                                             + ["trainer.val_check_interval=10"]))
        gap = next(cb for cb in trainer.callbacks if isinstance(cb, GapReport))
        report = RunReport(gap, ToneSpeech(tmp_path / "speech"), benchmarks=["copa"], n_items=4, settings=settings,
                           out_dir=tmp_path / "report")
        trainer.callbacks.append(report)
        trainer.fit(model, datamodule=data)
        return [(p["label"], p["step"]) for p in report.points], report.points

    first, points = run(10)
    assert first == [("start", 0), ("end", 10)]
    resumed, again = run(20)  # resumes from the step-10 checkpoint: the start point is kept, not measured again
    assert resumed == [("start", 0), ("end", 10), ("end", 20)] and again[:2] == points
    for ckpt in (tmp_path / "exp").rglob("*.ckpt"):
        ckpt.unlink()
    fresh, _ = run(10)  # no checkpoint: a new run in the same folder does not inherit the old points
    assert fresh == [("start", 0), ("end", 10)]
