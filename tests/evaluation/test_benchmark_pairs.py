"""``examples/benchmark_pairs.py``: StoryCloze-protocol pairs from HellaSwag items, read back by the manifest reader."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from nemo_salad.evaluation.loaders import load_benchmark
from nemo_salad.evaluation.storycloze_pairs import read_pair_manifest

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "benchmark_pairs.py"


def _write_pairs():
    spec = importlib.util.spec_from_file_location("benchmark_pairs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.write_pairs


@pytest.mark.parametrize("kind", ["sSC", "tSC"])
def test_pairs_share_the_context_and_differ_in_the_ending(tmp_path, kind):
    out = tmp_path / f"{kind}.jsonl"
    assert _write_pairs()("hellaswag", kind, 6, 0, out) == 6
    items = {it.id: it for it in load_benchmark("hellaswag", n_items=6, seed=0).items}
    golds = {it.options[it.gold].strip() for it in items.values()}
    for line in out.read_text().splitlines():
        row = json.loads(line)
        item = items[row["id"]]
        context = row["context"]["text"]
        right = item.options[item.gold].strip()
        assert row["correct"]["text"] == f"{context} {right}"
        wrong = row["incorrect"]["text"].removeprefix(context + " ")
        assert wrong != right
        if kind == "sSC":  # another ending of the same item
            assert wrong in {o.strip() for o in item.options}
        else:  # the right ending of another item
            assert wrong in golds
    pairs = read_pair_manifest(out)
    assert len(pairs.pairs) == 6


def test_an_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected sSC or tSC"):
        _write_pairs()("hellaswag", "xSC", 3, 0, tmp_path / "x.jsonl")
