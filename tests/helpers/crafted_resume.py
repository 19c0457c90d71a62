"""Train the tiny Stage I recipe two steps under NeMo-2's MegatronStrategy (CPU, one process), replace the last
checkpoint's ``.metadata`` by a pickle that creates a folder when unpickled, and resume from it (spawned by
tests/training/test_megatron_safe_resume.py).

    python -m tests.helpers.crafted_resume CORPUS EXP_DIR MARKER

Prints ``REFUSED <exception type>: <message>`` if the resume raised, ``RESUMED`` otherwise.
"""

from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path


class MakesFolder:
    """Unpickling this object creates a folder."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.makedirs, (self.marker,)


def main() -> None:
    corpus, exp_dir, marker = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    os.environ["OMP_NUM_THREADS"] = "1"

    from nemo_salad.recipes.train import train
    from tests.helpers.megatron_fit import megatron_overrides
    from tests.helpers.megatron_step import cuda_standins
    from tests.training.conftest import compose

    quick = ["report_gap_at_start=false", "exp_manager.checkpoint_callback_params.save_nemo_on_train_end=false"]
    with cuda_standins():
        train(compose(megatron_overrides(corpus, exp_dir, 2) + quick))
    (last,) = sorted((exp_dir / "salad_stage1" / "checkpoints").glob("*-last"))
    metadata_file = last / "weights" / ".metadata"
    metadata = pickle.loads(metadata_file.read_bytes())  # the run's own, genuine file
    metadata.storage_meta = MakesFolder(marker)
    metadata_file.write_bytes(pickle.dumps(metadata))
    try:
        with cuda_standins():
            train(compose(megatron_overrides(corpus, exp_dir, 4) + quick))  # exp_manager resumes from `last`
    except BaseException as exc:  # noqa: BLE001 - reported to the test
        print(f"REFUSED {type(exc).__name__}: {exc}", flush=True)
        return
    print("RESUMED", flush=True)


if __name__ == "__main__":
    main()
