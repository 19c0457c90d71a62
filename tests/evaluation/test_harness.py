"""The harness end to end on a tiny LLM: identity speech == text exactly, reference cascade == text exactly,
prompts and scores against an independent string-built re-computation, the context budget, and bad input."""

from __future__ import annotations

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
    evaluate_benchmark,
    load_benchmark,
)
from nemo_salad.evaluation.asr import ReferenceTranscriber
from nemo_salad.evaluation.prompts import choose_shot_candidates, shots_for
from nemo_salad.evaluation.scoring import ScoreRequest, score_full_forward
from nemo_salad.parts.olmo_data import read_olmo_dataset


def _systems(llm, tok, encoder=None):
    encoder = encoder or IdentitySpeechEncoder(llm, tok)
    return [TextSystem(llm, tok), SpeechSystem(encoder), CascadeSystem(llm, tok, ReferenceTranscriber()),
            TextSystem(llm, tok, name="speech_model_text", role="speech_text")]


@pytest.fixture(scope="module")
def benches():
    return [load_benchmark("copa", n_items=24), load_benchmark("arc_easy", n_items=16),
            load_benchmark("mmlu", n_items=12)]


@pytest.fixture(scope="module")
def identity_run(tiny_llm, byte_tok, benches):
    settings = ScoringSettings(max_tokens=400, max_shots=3, batch_tokens=1500)
    return evaluate(benches, _systems(tiny_llm, byte_tok), settings, TranscriptOnlySpeech())


def _assert_same_scores(bench_result, a: str, b: str):
    for rec in bench_result.items:
        assert rec["systems"][a]["scores"] == rec["systems"][b]["scores"], rec["id"]
        assert rec["systems"][a]["pred"] == rec["systems"][b]["pred"]
    sa, sb = bench_result.systems[a], bench_result.systems[b]
    assert (sa.acc, sa.acc_per_token, sa.acc_per_char) == (sb.acc, sb.acc_per_token, sb.acc_per_char)


@pytest.mark.parametrize("other", ["speech_model", "cascade", "speech_model_text"])
def test_identity_speech_and_reference_cascade_equal_text_exactly(identity_run, other):
    for b in identity_run.benchmarks:
        assert b.n_items > 0 and any(r["n_shots"] > 0 for r in b.items)  # few-shot prompts were exercised
        _assert_same_scores(b, "text_llm", other)
        assert identity_run.gap(b.name, other) == 0.0


def test_a_perturbed_speech_path_is_detected(tiny_llm, byte_tok, benches):
    """Negative control: the exactness above is not vacuous — slightly different embeddings change the scores."""

    class Noisy(IdentitySpeechEncoder):
        def encode_cuts(self, cuts):
            return [e + 1e-3 for e in super().encode_cuts(cuts)]

    res = evaluate_benchmark(benches[0], [TextSystem(tiny_llm, byte_tok), SpeechSystem(Noisy(tiny_llm, byte_tok))],
                             ScoringSettings(max_tokens=400, max_shots=2), TranscriptOnlySpeech())
    pairs = [(r["systems"]["text_llm"]["scores"]["sum"], r["systems"]["speech_model"]["scores"]["sum"])
             for r in res.items]
    diffs = [abs(a - b) for text, speech in pairs for a, b in zip(text, speech, strict=True)]
    assert max(diffs) > 1e-4


def test_identity_through_synthesized_shar_cache(tiny_llm, byte_tok, tmp_path):
    from nemo_salad.evaluation import SynthesizedSpeech
    from nemo_salad.synthesis import SineBackend

    bench = load_benchmark("copa", n_items=6)
    source = SynthesizedSpeech(SineBackend(), root=tmp_path)
    settings = ScoringSettings(max_tokens=300, max_shots=2)
    res = evaluate_benchmark(bench, _systems(tiny_llm, byte_tok)[:2], settings, source)
    _assert_same_scores(res, "text_llm", "speech_model")
    again = evaluate_benchmark(bench, _systems(tiny_llm, byte_tok)[:2], settings, source)  # from the cache
    assert [r["systems"] for r in again.items] == [r["systems"] for r in res.items]
    assert len(list(tmp_path.glob("*/COMPLETE"))) == 1
    # texts the synthesis layer normalises (whitespace runs, NFD accents, control characters) stay exact
    import json

    rows = [{"question": "Is  the\tcafe\u0301 open?\u200b", "choices": ["yes", "no"], "answer": 0},
            {"question": "Which   one?", "choices": ["a", "b", "c"], "answer": 2},
            {"question": "Why\n\nnot?", "choices": ["x", "y"], "answer": 1}]
    path = tmp_path / "messy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    messy = load_benchmark("jsonl", path=path)
    assert [i.spoken_texts[0] for i in messy.items] == ["Is the caf\u00e9 open?", "Which one?", "Why not?"]
    res = evaluate_benchmark(messy, _systems(tiny_llm, byte_tok)[:2], settings, source)
    _assert_same_scores(res, "text_llm", "speech_model")


def _independent(llm, tok, context: str, options: list[str]) -> list[float]:
    ids = tok(context, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ctx = llm.embed(torch.tensor(ids)[None])[0]
    opts = [tok(o, add_special_tokens=False)["input_ids"] for o in options]
    return score_full_forward(llm, [ScoreRequest(ctx, opts)])[0]


def _check_record(llm, tok, rec, context: str, options: list[str]):
    sums = _independent(llm, tok, context, options)
    got = rec["systems"]["text_llm"]
    assert got["scores"]["sum"] == pytest.approx(sums, abs=2e-5)
    n_tok = [len(tok(o, add_special_tokens=False)["input_ids"]) for o in options]
    assert got["scores"]["per_token"] == pytest.approx([s / n for s, n in zip(sums, n_tok, strict=True)], abs=2e-5)
    per_char = [s / len(o) for s, o in zip(sums, options, strict=True)]
    assert got["scores"]["per_char"] == pytest.approx(per_char, abs=2e-5)
    for metric in ("sum", "per_token", "per_char"):
        vals = got["scores"][metric]
        assert got["pred"][metric] == vals.index(max(vals))


def test_copa_prompts_and_scores_match_an_independent_recomputation(tiny_llm, byte_tok):
    """Zero-shot COPA prompts rebuilt from the raw rows as plain strings, scored by full forwards."""
    raw = {str(r["idx"]): r for r in read_olmo_dataset("super_glue/copa")}
    bench = load_benchmark("copa", n_items=10)
    res = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], ScoringSettings(max_shots=0))
    for rec in res.items:
        row = raw[rec["id"]]
        context = " " + row["premise"].rstrip(".") + {"cause": " because", "effect": " therefore"}[row["question"]]
        options = [" " + c[0].lower() + c[1:] for c in (row["choice1"], row["choice2"])]
        assert rec["gold"] == row["label"] and rec["n_shots"] == 0
        _check_record(tiny_llm, byte_tok, rec, context, options)


def _arc_strings(row) -> tuple[str, list[str], int]:
    labels = row["choices"]["label"]
    return (f"Question: {row['question']}\nAnswer:", [" " + t for t in row["choices"]["text"]],
            labels.index(row["answerKey"]))


def test_fewshot_prompts_and_context_budget_match_an_independent_recomputation(tiny_llm, byte_tok):
    """ARC-Easy with shots under a tight budget: the shot count is the largest that fits (counted in bytes =
    tokens here), and the scores equal full forwards of the prompt written out as one string."""
    raw = {r["id"]: r for r in read_olmo_dataset("ai2_arc/ARC-Easy")}
    bench = load_benchmark("arc_easy", n_items=12, seed=5)
    max_tokens = 420
    res = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], ScoringSettings(max_tokens=max_tokens))
    candidates, items = choose_shot_candidates(bench.shot_pool, 5), {i.id: i for i in bench.items}
    n_shots = set()
    for rec in res.items:
        query, options, gold = _arc_strings(raw[rec["id"]])
        shots = [_arc_strings(raw[s]) for s in rec["shot_ids"]]
        shot_texts = [q + opts[g] + "\n\n" for q, opts, g in shots]
        assert rec["gold"] == gold and rec["id"] not in rec["shot_ids"]
        base = len(query.encode()) + max(len(o.encode()) for o in options)
        used = base + sum(len(s.encode()) for s in shot_texts)
        assert used <= max_tokens
        cands = [s.id for s in shots_for(items[rec["id"]], candidates, 5)]
        assert rec["shot_ids"] == cands[:rec["n_shots"]]
        if rec["n_shots"] < len(cands):  # the next candidate shot would not have fitted
            q, opts, g = _arc_strings(raw[cands[rec["n_shots"]]])
            assert used + len((q + opts[g] + "\n\n").encode()) > max_tokens
        _check_record(tiny_llm, byte_tok, rec, "".join(shot_texts) + query, options)
        n_shots.add(rec["n_shots"])
    assert len(n_shots) > 1 and max(n_shots) > 0  # the budget bound differently for different items


def test_speech_frames_count_in_the_budget_and_all_systems_share_the_shots(tiny_llm, byte_tok):
    """A speech path 3x longer than its text fits fewer shots; every system then uses that smaller count."""

    class Slow(IdentitySpeechEncoder):
        def encode_cuts(self, cuts):
            return [e.repeat_interleave(3, dim=0) for e in super().encode_cuts(cuts)]

    bench = load_benchmark("arc_easy", n_items=10, seed=2)
    settings = ScoringSettings(max_tokens=500)
    text_only = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], settings)
    both = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok), SpeechSystem(Slow(tiny_llm, byte_tok))],
                              settings, TranscriptOnlySpeech())
    k_text = {r["id"]: r["n_shots"] for r in text_only.items}
    k_both = {r["id"]: r["n_shots"] for r in both.items}
    assert all(k_both[i] <= k_text[i] for i in k_both) and sum(k_both.values()) < sum(k_text.values())
    with_text_shots = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok),
                                                 SpeechSystem(Slow(tiny_llm, byte_tok))],
                                         ScoringSettings(max_tokens=500, shots_modality="text"), TranscriptOnlySpeech())
    assert sum(r["n_shots"] for r in with_text_shots.items) > sum(k_both.values())  # text shots are shorter


def test_items_too_long_for_the_budget_are_skipped_and_counted(tiny_llm, byte_tok):
    bench = load_benchmark("arc_easy", n_items=30, seed=0)
    lengths = sorted(len(("Question: " + i.spoken_texts[0] + "\nAnswer:").encode()) + max(len(o) for o in i.options)
                     for i in bench.items)
    budget = lengths[len(lengths) // 2]
    res = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], ScoringSettings(max_tokens=budget))
    assert res.skipped["too_long"] == sum(n > budget for n in lengths) > 0
    assert res.n_items == 30 - res.skipped["too_long"]
    with pytest.raises(ValueError, match="no item left to score"):
        evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], ScoringSettings(max_tokens=5))


def test_audio_systems_need_a_speech_source(tiny_llm, byte_tok):
    bench = load_benchmark("copa", n_items=2)
    with pytest.raises(ValueError, match=r"\['speech_model'\] need audio"):
        evaluate_benchmark(bench, _systems(tiny_llm, byte_tok)[:2])
    with pytest.raises(TypeError, match="does not implement SpeechContextEncoder"):
        SpeechSystem(object())


def test_settings_are_validated():
    with pytest.raises(ValueError, match="shots_modality"):
        ScoringSettings(shots_modality="audio")
    with pytest.raises(ValueError, match="primary"):
        ScoringSettings(primary="acc_norm")
