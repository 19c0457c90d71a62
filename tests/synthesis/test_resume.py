"""Resumability: a writer killed with SIGKILL (or between the renames of a commit) loses and duplicates nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from lhotse import CutSet

from nemo_salad.synthesis import SineBackend, load_synthesized, synthesize_to_shar, text_cuts
from nemo_salad.synthesis.shar_store import scan_output, shar_fields

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 60

_CHILD = """
import sys
from nemo_salad.synthesis import synthesize_to_shar, text_cuts
from tests.synthesis.helpers import RecordingBackend
from tests.synthesis.test_resume import items
synthesize_to_shar(text_cuts(items()), RecordingBackend(delay=float(sys.argv[2])), sys.argv[1], batch_size=4,
                   shard_size=10, progress=False)
"""


def items() -> list[tuple[str, str]]:
    return [(f"id-{i:03d}", f"sentence number {i} " + "x" * (1 + i % 17)) for i in range(N_ITEMS)]


def _assert_complete(out: Path) -> None:
    """Every input id exactly once, every shard loadable, every waveform the right length for its text."""
    fields = shar_fields(out)
    cuts = list(CutSet.from_shar(fields=fields))
    counts = Counter(c.id for c in cuts)
    texts = dict(items())
    assert set(counts) == set(texts) and max(counts.values()) == 1
    backend = SineBackend()
    for cut in cuts:
        assert cut.supervisions[0].text == texts[cut.id]
        assert cut.load_audio().shape == (1, backend.num_samples(texts[cut.id]))
    assert [c.id for c in load_synthesized(out)] == [c.id for c in cuts]


def test_sigkill_mid_run_then_rerun(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(out), "0.05"], cwd=ROOT, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first = out / "cuts.000000.jsonl.gz"
    deadline = time.monotonic() + 120
    while not first.exists():
        if child.poll() is not None:
            raise AssertionError(f"writer exited early ({child.returncode}): {child.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "the writer did not commit a shard within 120 s"
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    before = scan_output(out, clean=False)
    assert 1 <= len(before.shards) < N_ITEMS // 10, "the kill must land mid-run"
    assert not (out / "report.json").exists()

    report = synthesize_to_shar(text_cuts(items()), SineBackend(), out, batch_size=4, shard_size=10,
                                progress=False)
    assert report.n_resumed == before.n_cuts == 10 * len(before.shards)
    assert report.n_written == N_ITEMS - before.n_cuts and report.n_skipped == {}
    assert not (out / ".work" / "tmp").exists() or not any((out / ".work" / "tmp").iterdir())
    _assert_complete(out)


def test_kill_between_renames_of_a_commit_is_redone(tmp_path):
    synthesize_to_shar(text_cuts(items()), SineBackend(), tmp_path, shard_size=25, progress=False)
    assert scan_output(tmp_path).shards == [0, 1, 2]
    # state after a kill between the renames of shard 2: audio and drop log in place, cuts manifest not yet
    (tmp_path / "cuts.000002.jsonl.gz").unlink()
    junk = tmp_path / ".work" / "tmp" / "000003"
    junk.mkdir(parents=True)
    (junk / "recording.tar").write_bytes(b"partial")
    report = synthesize_to_shar(text_cuts(items()), SineBackend(), tmp_path, shard_size=25, progress=False)
    assert (report.n_resumed, report.n_written) == (50, 10)
    assert scan_output(tmp_path).shards == [0, 1, 2] and not junk.exists()
    _assert_complete(tmp_path)
    rerun = synthesize_to_shar(text_cuts(items()), SineBackend(), tmp_path, shard_size=25, progress=False)
    assert (rerun.n_resumed, rerun.n_written, rerun.n_shards) == (N_ITEMS, 0, 0)
