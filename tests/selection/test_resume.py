"""Kill a round with SIGKILL inside each step in turn (separate processes), rerun, and check that finished
artefacts are reused and the final selection equals an uninterrupted run with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_salad.selection import HashingEncoder, run_selection_round
from nemo_salad.synthesis import SineBackend
from tests.selection.helpers import RecordingBackend, RecordingEncoder, TopicMeasure, read_log, topic_corpus
from tests.selection.round_script import N_PROBE_TOTAL, config

ROOT = Path(__file__).resolve().parents[2]


def _killed_run(workdir: Path, log: Path, step: str, n: int) -> list[dict]:
    start = len(read_log(log))
    proc = subprocess.run([sys.executable, "-m", "tests.selection.round_script", str(workdir), str(log), step, str(n)],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -9, f"expected a SIGKILL in step {step}, got rc={proc.returncode}\n{proc.stderr[-3000:]}"
    return read_log(log)[start:]


@pytest.mark.slow
def test_kill_at_every_step_then_resume(tmp_path):
    corpus = topic_corpus(100)
    reference = run_selection_round(config(), corpus, TopicMeasure("physics"), SineBackend(), tmp_path / "ref",
                                    encoder=HashingEncoder())
    work, log = tmp_path / "killed", tmp_path / "log.jsonl"

    run1 = _killed_run(work, log, "embed", 3)  # dies before its 4th chunk of 100 texts
    assert [r["encode"] for r in run1] == [100, 100, 100]

    run2 = _killed_run(work, log, "probe", 20)  # embeddings resume, then dies during probe synthesis
    assert sum(r.get("encode", 0) for r in run2) == len(corpus) - 300
    probe_texts_2 = [t for r in run2 for t in r.get("synth", [])]
    assert 0 < len(probe_texts_2) <= 20

    run3 = _killed_run(work, log, "measure", 2)  # no embedding; probes of finished clusters are not redone
    assert not any("encode" in r for r in run3)
    probe_texts_3 = [t for r in run3 for t in r.get("synth", [])]
    assert len(probe_texts_3) < N_PROBE_TOTAL and len(probe_texts_2) + len(probe_texts_3) >= N_PROBE_TOTAL
    assert len([r for r in run3 if "measure" in r]) == 2

    run4 = _killed_run(work, log, "active", 12)  # measures only the clusters not measured yet
    measured = [r["measure"][0] for r in run3 + run4 if "measure" in r]
    assert len(measured) == 6 and len(set(measured)) == 6
    assert not any("encode" in r for r in run4)
    active_4 = [t for r in run4 for t in r.get("synth", [])]
    assert 0 < len(active_4) <= 12

    encoder, backend, measure = RecordingEncoder(HashingEncoder()), RecordingBackend(SineBackend()), TopicMeasure()
    final = run_selection_round(config(), corpus, measure, backend, work, encoder=encoder)
    assert (encoder.encoded, measure.calls) == (0, 0)
    assert not set(backend.texts) & set(active_4[:8])  # the committed active shard (8 items) was reused
    assert final.selection.ids == reference.selection.ids  # same seed, same selection
    assert [c.id for c in final.cuts] == [c.id for c in reference.cuts]
    ref_rows = json.loads((tmp_path / "ref" / "report.json").read_text())["clusters"]
    assert json.loads((work / "report.json").read_text())["clusters"] == ref_rows
