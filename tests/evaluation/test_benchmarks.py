"""Benchmark loaders: offline copies, official StoryCloze CSV, MMSU JSONL, save_to_disk dirs, and bad input."""

from __future__ import annotations

import csv
import json
import logging

import pytest

from nemo_salad.evaluation import BENCHMARKS, load_benchmark
from nemo_salad.evaluation.items import select_items
from nemo_salad.evaluation.prompts import choose_shot_candidates, shots_for

OFFLINE = {  # name -> rows in the shipped scored split
    "arc_easy": 570, "arc_challenge": 299, "openbookqa": 500, "hellaswag": 10042, "piqa": 1838, "copa": 100,
    "mmlu": 14042,
}


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_benchmarks_load_as_spoken_items(name):
    bench = load_benchmark(name)
    assert bench.n_rows == OFFLINE[name]
    assert len(bench.items) + sum(bench.skipped.values()) == bench.n_rows
    assert sum(bench.skipped.values()) == 0, bench.skipped
    for item in bench.items[:50]:
        assert item.spoken_texts and all(t.strip() == t and t for t in item.spoken_texts)
        assert 0 <= item.gold < len(item.options)
        assert all(o.startswith(" ") and o.strip() for o in item.options)
        assert not any(s.text.endswith(" ") for s in item.query if not s.spoken)  # spoken parts bring the space
    assert len({i.id for i in bench.items}) == len(bench.items)


def test_mmlu_shots_come_from_the_dev_split_of_the_same_subject():
    bench = load_benchmark("mmlu", n_items=40, seed=1)
    assert bench.shot_source.endswith("/*/dev")
    assert len(bench.shot_pool) == 57 * 5
    cands = choose_shot_candidates(bench.shot_pool, 5)
    for item in bench.items:
        shots = shots_for(item, cands, 5)
        assert len(shots) == 5 and all(s.group == item.group for s in shots)
        assert item.preamble.startswith("The following are multiple choice questions (with answers) about ")


def test_same_split_shots_never_include_the_item_itself():
    bench = load_benchmark("copa")
    assert bench.shot_source.startswith("held-out items of ")
    cands = choose_shot_candidates(bench.shot_pool, 5)
    picked = {c.id for c in cands[""]}
    for item in bench.items:
        shots = shots_for(item, cands, 5)
        assert len(shots) == 5 and item.id not in {s.id for s in shots}
    assert any(i.id in picked for i in bench.items)  # the case above was exercised


def test_selection_is_seeded_and_ordered():
    a = load_benchmark("arc_easy", n_items=50, seed=3)
    b = load_benchmark("arc_easy", n_items=50, seed=3)
    c = load_benchmark("arc_easy", n_items=50, seed=4)
    assert [i.id for i in a.items] == [i.id for i in b.items] != [i.id for i in c.items]
    full = [i.id for i in load_benchmark("arc_easy").items]
    assert [full.index(i.id) for i in a.items] == sorted(full.index(i.id) for i in a.items)
    assert len(select_items(a.items, 10_000)) == 50


STORY_COLUMNS = ["InputStoryid", "InputSentence1", "InputSentence2", "InputSentence3", "InputSentence4",
                 "RandomFifthSentenceQuiz1", "RandomFifthSentenceQuiz2", "AnswerRightEnding"]


def _story(sid: str, answer: str) -> list[str]:
    return [sid, "Tom got a dog.", "He walked it daily.", "One day it ran off.", "Tom searched all night.",
            "He found it at dawn.", "He bought a cat.", answer]


def test_storycloze_official_csv(tmp_path, caplog):
    path = tmp_path / "cloze_test_test__spring2016.csv"
    rows = [_story("s1", "1"), _story("s2", "2"), _story("s3", "3"), _story("s4", "")]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([STORY_COLUMNS, *rows])
    with caplog.at_level(logging.WARNING):
        bench = load_benchmark("storycloze", path=path)
    assert [i.gold for i in bench.items] == [0, 1]
    story = "Tom got a dog. He walked it daily. One day it ran off. Tom searched all night."
    assert bench.items[0].spoken_texts == (story,)
    assert bench.items[0].options == (" He found it at dawn.", " He bought a cat.")
    assert bench.skipped == {"gold_out_of_range": 1, "missing_answer": 1}
    assert str(path) in caplog.text and "skipped 2 of 4 rows" in caplog.text


def test_unshipped_benchmarks_say_how_to_get_them():
    with pytest.raises(ValueError, match="'copa' is the offline stand-in"):
        load_benchmark("storycloze")
    with pytest.raises(ValueError, match="'mmlu' is the offline stand-in"):
        load_benchmark("mmsu")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mmsu_jsonl_and_bad_rows_are_counted(tmp_path, caplog):
    good = {"question": "Which organ pumps blood?", "option_a": "heart", "option_b": "lung", "option_c": "skin",
            "option_d": "bone", "reference": "A", "category": "biology"}
    path = _write_jsonl(tmp_path / "mmsu.jsonl", [
        good,
        {**good, "reference": None},  # missing answer key
        {**good, "reference": "F"},  # gold out of range (4 options)
        {"question": "No options?", "reference": "A"},  # zero options
        {"question": "Listed", "choices": ["yes", "no"], "answer": 1},
    ])
    with caplog.at_level(logging.WARNING):
        bench = load_benchmark("mmsu", path=path)
    assert [(i.options, i.gold, i.group) for i in bench.items] == [
        ((" heart", " lung", " skin", " bone"), 0, "biology"), ((" yes", " no"), 1, "")]
    assert bench.skipped == {"missing_answer": 1, "gold_out_of_range": 1, "no_options": 1}
    assert "mmsu.jsonl" in caplog.text and "skipped 3 of 5 rows" in caplog.text


def test_zero_valid_items_is_an_error_naming_the_file(tmp_path):
    path = _write_jsonl(tmp_path / "broken.jsonl", [{"question": "Q?", "choices": ["a", "b"], "answer": 5}])
    with pytest.raises(ValueError, match=r"no valid items in .*broken\.jsonl .*gold_out_of_range"):
        load_benchmark("jsonl", path=path)


def test_malformed_json_and_schema_errors_name_the_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "Q", "choices": ["a"], "answer": 0}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: not valid JSON"):
        load_benchmark("jsonl", path=bad)
    wrong = _write_jsonl(tmp_path / "wrong.jsonl", [{"prompt": "Q", "sol1": "a"}])
    with pytest.raises(ValueError, match=r"wrong\.jsonl: row 0 does not fit the 'piqa' schema .*'goal'"):
        load_benchmark("piqa", path=wrong)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_binary_benchmark_file_is_named(tmp_path, suffix):
    path = tmp_path / f"binary{suffix}"
    path.write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)))  # e.g. a gzip file without the .gz suffix
    with pytest.raises(ValueError, match=rf"binary\{suffix}: cannot be decoded as UTF-8 text \(invalid start byte\); "
                                         r"expected a \.jsonl/\.json/\.csv text file"):
        load_benchmark("jsonl" if suffix != ".csv" else "storycloze", path=path)


def test_a_truncated_json_benchmark_file_is_named(tmp_path):
    path = tmp_path / "cut.json"
    path.write_text('[{"question": "Q", "choices": ["a", "b"], "answer": 0}, {"question": "R", "cho')
    with pytest.raises(ValueError, match=r"cut\.json:1:\d+: not valid JSON \(Unterminated string .*\); expected a "
                                         r"JSON list of rows \(is the file truncated\?\)"):
        load_benchmark("jsonl", path=path)


def test_save_to_disk_directory_uses_its_train_split_for_shots(tmp_path):
    import datasets

    def rows(prefix, n):
        return [{"id": f"{prefix}{i}", "question": f"{prefix} question {i}?",
                 "choices": {"text": ["a", "b", "c"], "label": ["A", "B", "C"]}, "answerKey": "ABC"[i % 3]}
                for i in range(n)]

    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows("train", 8)),
                          "validation": datasets.Dataset.from_list(rows("val", 5))}).save_to_disk(str(tmp_path / "arc"))
    bench = load_benchmark("arc_easy", path=tmp_path / "arc")
    assert [i.id for i in bench.items] == [f"val{i}" for i in range(5)]
    assert {i.id for i in bench.shot_pool} == {f"train{i}" for i in range(8)}
    assert bench.shot_source.endswith("[train]")
    assert [i.gold for i in bench.items] == [0, 1, 2, 0, 1]


def test_registry_has_the_papers_six_and_the_extras():
    assert {"storycloze", "mmsu", "openbookqa", "hellaswag", "arc_challenge", "piqa", "arc_easy", "copa",
            "mmlu"} <= set(BENCHMARKS)
