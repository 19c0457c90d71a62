"""lead_or_follow over 2 gloo processes: rank 0's work runs once, each of its measurements runs on both ranks with the
same cuts (the shared measure keeps the measure's definition), and a failure on rank 0 reaches the other rank instead
of leaving it waiting."""

from __future__ import annotations

import json
from pathlib import Path

import torch.multiprocessing as mp
from lhotse import CutSet, MonoCut


def _cuts(n: int, tag: str) -> CutSet:
    return CutSet.from_cuts(MonoCut(id=f"{tag}{i}", start=0.0, duration=1.0 + i, channel=0) for i in range(n))


def _rank(rank: int, init_file: str, out: str) -> None:
    """Both cases in one pair of processes: a round that succeeds, then one that fails on rank 0."""
    import torch.distributed as dist

    from nemo_salad.callbacks.shared_measure import coordination_group, lead_or_follow

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    group = coordination_group(60)
    for fail in (False, True):
        seen: list[list[str]] = []

        def measure(cuts: CutSet, seen: list = seen) -> float:
            seen.append([c.id for c in cuts])
            return float(sum(c.duration for c in cuts))

        measure.definition = "total duration"  # what stored values are kept under (selection/probe.py)

        def work(shared, fail: bool = fail) -> list[float]:
            values = [shared(_cuts(2, "a")), shared(_cuts(3, "b")), getattr(shared, "definition", None)]
            if fail:
                raise ValueError("no cluster could be measured")
            return values

        try:
            result, error = lead_or_follow(work, measure, group), None
        except (ValueError, RuntimeError) as err:
            result, error = None, f"{type(err).__name__}: {err}"
        Path(out, f"rank{rank}-{fail}.json").write_text(json.dumps({"result": result, "seen": seen, "error": error}))
    dist.destroy_process_group()


def test_rank_zero_leads_every_rank_measures_the_same_cuts_and_a_failure_reaches_all(tmp_path):
    mp.start_processes(_rank, args=(str(tmp_path / "rdv"), str(tmp_path)), nprocs=2, start_method="spawn")
    lead, follow = (json.loads((tmp_path / f"rank{r}-False.json").read_text()) for r in range(2))
    assert lead["result"] == [3.0, 6.0, "total duration"] and follow["result"] is None
    assert lead["seen"] == follow["seen"] == [["a0", "a1"], ["b0", "b1", "b2"]]
    assert lead["error"] is follow["error"] is None

    lead, follow = (json.loads((tmp_path / f"rank{r}-True.json").read_text()) for r in range(2))
    assert lead["error"] == "ValueError: no cluster could be measured"
    assert follow["error"].startswith("RuntimeError: global rank 0 failed") and "no cluster could be measured" in \
        follow["error"]
    assert lead["seen"] == follow["seen"]
