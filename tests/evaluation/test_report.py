"""results.json / results.md / results.png of a run."""

from __future__ import annotations

import json

import pytest
import torch

from nemo_salad.evaluation import (
    CascadeSystem,
    IdentitySpeechEncoder,
    ScoringSettings,
    SpeechSystem,
    TextSystem,
    TranscriptOnlySpeech,
    evaluate,
    load_benchmark,
    markdown_table,
    write_report,
)
from nemo_salad.evaluation.asr import ReferenceTranscriber


@pytest.fixture(scope="module")
def run(tiny_llm, byte_tok):
    from nemo_salad.llm import LLMConfig, MegatronLLM

    torch.manual_seed(1)  # a different "speech model" LLM, so that its row really differs from the topline
    other = MegatronLLM(LLMConfig.preset("tiny-qwen2")).eval()
    benches = [load_benchmark("copa", n_items=40), load_benchmark("piqa", n_items=12)]
    systems = [TextSystem(tiny_llm, byte_tok), CascadeSystem(tiny_llm, byte_tok, ReferenceTranscriber()),
               SpeechSystem(IdentitySpeechEncoder(other, byte_tok))]
    return evaluate(benches, systems, ScoringSettings(max_tokens=300, max_shots=2, primary="per_token"),
                    TranscriptOnlySpeech())


def test_json_has_per_item_predictions_and_accuracies(run, tmp_path):
    paths = write_report(run, tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["settings"]["primary"] == "per_token"
    for name, bench in data["benchmarks"].items():
        assert len(bench["items"]) == bench["n_items"] == run.benchmark(name).n_items
        for rec in bench["items"]:
            for entry in rec["systems"].values():
                assert set(entry["scores"]) == {"sum", "per_token", "per_char"}
                assert all(len(v) == len(rec["options"]) for v in entry["scores"].values())
                assert set(entry["pred"]) == {"sum", "per_token", "per_char"}
            assert rec["systems"]["cascade"]["transcripts"] == rec["spoken"]
        for sys_name, scores in bench["systems"].items():
            for metric, key in (("sum", "acc"), ("per_token", "acc_per_token"), ("per_char", "acc_per_char")):
                preds = [r["systems"][sys_name]["pred"][metric] == r["gold"] for r in bench["items"]]
                assert scores[key] == pytest.approx(sum(preds) / len(preds))
            assert scores["primary"] == scores["acc_per_token"]
            assert scores["gap"] == pytest.approx(bench["systems"]["text_llm"]["primary"] - scores["primary"])
            assert scores["items_per_s"] > 0


def test_markdown_is_the_table3_layout(run):
    md = markdown_table(run)
    lines = md.splitlines()
    assert lines[2] == "| System | COPA | PIQA | Avg gap |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines[4:7]}
    assert set(rows) == {"Text LLM on text (topline)", "ASR + text LLM (cascade)", "Speech model on speech"}
    copa, piqa = run.benchmarks
    top = copa.systems["text_llm"].primary
    sp = copa.systems["speech_model"].primary
    assert f"| {100 * top:.1f} |" in rows["Text LLM on text (topline)"]
    assert sp != top or piqa.systems["speech_model"].primary != piqa.systems["text_llm"].primary  # non-trivial gap
    assert f"{100 * sp:.1f} / {100 * (top - sp):.1f}" in rows["Speech model on speech"]
    avg = (top - sp + piqa.systems["text_llm"].primary - piqa.systems["speech_model"].primary) / 2
    assert rows["Speech model on speech"].endswith(f"| {100 * avg:.1f} |")
    assert "| COPA | 40 | none | 50.0 |" in md


def test_png_is_written(run, tmp_path):
    from PIL import Image

    path = write_report(run, tmp_path)["png"]
    with Image.open(path) as im:
        assert im.size[0] > 300 and im.size[1] > 200


def test_shots_per_system_and_benchmark_are_reported(tiny_llm, byte_tok, tmp_path):
    """A speech path 3x longer than its text fits fewer shots: results.md and results.json give each system's
    own shots per item (mean, min, max) per benchmark, recomputed here from the per-item records."""

    class Slow(IdentitySpeechEncoder):
        def encode_cuts(self, cuts):
            return [e.repeat_interleave(3, dim=0) for e in super().encode_cuts(cuts)]

    benches = [load_benchmark("arc_easy", n_items=10, seed=0), load_benchmark("copa", n_items=8)]
    systems = [TextSystem(tiny_llm, byte_tok), SpeechSystem(Slow(tiny_llm, byte_tok))]
    res = evaluate(benches, systems, ScoringSettings(max_tokens=450, max_shots=3), TranscriptOnlySpeech())
    paths = write_report(res, tmp_path)
    lines = paths["md"].read_text().splitlines()
    head = lines.index("Few-shot examples per item, mean (min–max): each system as many as fit its own 450-token "
                       "context (speech frames count as tokens), up to 3.")
    assert lines[head + 2] == "| System | ARC-E | COPA |"
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in lines[head + 4:head + 6]}
    data = json.loads(paths["json"].read_text())
    for label, name in (("Text LLM on text (topline)", "text_llm"), ("Speech model on speech", "speech_model")):
        for cell, b in zip(rows[label], res.benchmarks, strict=True):
            ks = [r["systems"][name]["n_shots"] for r in b.items]
            mean = sum(ks) / len(ks)
            assert cell.rstrip(" |") == (str(ks[0]) if min(ks) == max(ks) else f"{mean:.1f} ({min(ks)}–{max(ks)})")
            entry = data["benchmarks"][b.name]["systems"][name]
            assert (entry["shots_mean"], entry["shots_min"], entry["shots_max"]) == (mean, min(ks), max(ks))
    arc = res.benchmark("arc_easy").systems
    assert arc["speech_model"].shots_mean < arc["text_llm"].shots_mean  # the rows really differ
    fixed = evaluate(benches[1:], systems, ScoringSettings(max_tokens=450, shots=1), TranscriptOnlySpeech())
    md = markdown_table(fixed)
    assert "Few-shot examples per item, mean (min–max): exactly 1 in every system." in md
    assert "| Speech model on speech | 1 |" in md
