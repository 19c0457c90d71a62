"""Runs one selection round in a separate process for the kill tests:

    python -m tests.selection.round_script WORKDIR LOG STEP N

STEP (embed | probe | measure | active | none) and N say where the process SIGKILLs itself: before its N-th
encoder chunk (embed), before synthesizing more than N texts in this process (probe, active), or before its
N-th measurement (measure).
"""

from __future__ import annotations

import sys

from nemo_salad.selection import HashingEncoder, SelectionConfig, run_selection_round
from nemo_salad.synthesis import SineBackend
from tests.selection.helpers import RecordingBackend, RecordingEncoder, TopicMeasure, topic_corpus

N_PROBE_TOTAL = 6 * 6  # k clusters x probe_size


def config() -> SelectionConfig:
    return SelectionConfig(cluster={"k": 6, "slack": 0.0}, embed={"chunk_size": 100}, probe_size=6, budget=0.1,
                           gamma=5.0, seed=7, shard_size=8, batch_size=4)


def main(workdir: str, log: str, step: str, n: int) -> None:
    encoder = RecordingEncoder(HashingEncoder(), log, kill_after=n if step == "embed" else None)
    kill_synth = n if step in ("probe", "active") else None
    backend = RecordingBackend(SineBackend(), log, kill_after=kill_synth)
    measure = TopicMeasure("physics", log=log, kill_after=n if step == "measure" else None)
    run_selection_round(config(), topic_corpus(100), measure, backend, workdir, encoder=encoder)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
