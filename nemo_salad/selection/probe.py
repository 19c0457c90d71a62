"""Step 3 of Stage II selection: per-cluster probe sets, synthesized and scored with the model's misalignment.

For each cluster, ``probe_size`` member texts are drawn (seeded per cluster), synthesized into
``probes/c<cluster>/`` (Shar shards of :func:`nemo_salad.synthesis.synthesize_to_shar`, each cut carrying its
``cluster`` in ``custom``), and the measure ``M = measure(probe_cuts)`` is stored in ``m_<tag>.json``. A cluster
whose probe loses more than ``max_dropout`` of its items (CER filter or failed synthesis) is excluded and never
measured. Every cluster's work is kept on disk and reused on a rerun (verified by fingerprints).
"""

from __future__ import annotations

import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.selection.artefacts import fingerprint, read_json, write_json_atomic

__all__ = ["ProbeResult", "measure_probes", "probe_indices", "synthesize_probes"]

log = logging.getLogger(__name__)

Measure = Callable[[Any], float]


@dataclass
class ProbeResult:
    """One cluster's probe.

    Attributes:
        cluster (int): cluster id.
        n_probe (int): texts submitted.
        n_written (int): synthesized cuts kept.
        audio_seconds (float): their total duration.
        chars (int): characters of their transcripts.
        fingerprint (str): identifies texts, backend and synthesis settings.
        misalignment (float | None): M(c), None when excluded or not measured.
        excluded (str | None): why the cluster is not sampled (None if it is).

    >>> ProbeResult(cluster=3, n_probe=16, n_written=12, audio_seconds=80.0, chars=1300, fingerprint="f").n_dropped
    4
    """

    cluster: int
    n_probe: int
    n_written: int
    audio_seconds: float
    chars: int
    fingerprint: str
    misalignment: float | None = None
    excluded: str | None = None

    @property
    def n_dropped(self) -> int:
        """Probe items lost to the CER filter or to failed synthesis."""
        return self.n_probe - self.n_written


def probe_indices(assignments: np.ndarray, probe_size: int, seed: int) -> dict[int, np.ndarray]:
    """Corpus indices of each cluster's probe: ``min(probe_size, size)`` members, uniform without replacement,
    seeded by ``(seed, cluster)`` so one cluster's probe does not depend on the others.

    >>> probe_indices(np.array([0, 0, 0, 1]), probe_size=2, seed=0)[1].tolist()
    [3]
    """
    out = {}
    for c in range(int(assignments.max()) + 1):
        members = np.flatnonzero(assignments == c)
        if members.size:
            rng = np.random.default_rng([seed, c])
            out[c] = np.sort(rng.choice(members, size=min(probe_size, members.size), replace=False))
    return out


def _cluster_dir(root: Path, cluster: int) -> Path:
    return root / f"c{cluster:04d}"


def synthesize_probes(
    probes: dict[int, np.ndarray],
    ids: Sequence[str],
    texts: Sequence[str],
    backend: Any,
    out_dir: str | Path,
    *,
    asr_filter: Any = None,
    batch_size: int = 8,
    max_chars: int = 600,
) -> dict[int, ProbeResult]:
    """Synthesize every cluster's probe into ``out_dir/c<cluster>`` (reusing finished clusters).

    Args:
        probes (dict[int, np.ndarray]): cluster -> corpus indices (from :func:`probe_indices`).
        ids (Sequence[str]): corpus ids (become cut ids).
        texts (Sequence[str]): corpus texts.
        backend (TTSBackend): the TTS engine.
        out_dir (str | Path): the ``probes`` directory.
        asr_filter (CERFilter | None): drops items whose ASR transcript disagrees. Default: None.
        batch_size (int): TTS batch size. Default: 8.
        max_chars (int): longer texts are skipped. Default: 600.

    Returns:
        dict[int, ProbeResult]: per cluster, without misalignment yet.

    >>> import tempfile
    >>> from nemo_salad.synthesis import SineBackend
    >>> out = tempfile.mkdtemp()
    >>> res = synthesize_probes({0: np.array([0, 1])}, ["a", "b"], ["Hello there.", "Good night."], SineBackend(), out)
    >>> res = measure_probes(res, out, measure=lambda cuts: float(len(list(cuts))), tag="demo")
    >>> res[0].n_written, res[0].misalignment
    (2, 2.0)
    """
    from nemo_salad.synthesis import load_synthesized, synthesize_to_shar, text_cuts

    root = Path(out_dir)
    provenance = dict(backend.provenance())
    filter_id = None if asr_filter is None else {"type": type(asr_filter).__name__,
                                                  "max_cer": getattr(asr_filter, "max_cer", None)}
    results = {}
    for cluster, members in sorted(probes.items()):
        items = [{"id": ids[i], "text": texts[i], "cluster": int(cluster)} for i in members]
        fp = fingerprint("probe", items, provenance, filter_id, max_chars)
        directory = _cluster_dir(root, cluster)
        marker = read_json(directory / "probe.json")
        if marker is None or marker.get("fingerprint") != fp:
            plan = read_json(directory / "plan.json")
            if (plan is not None and plan.get("fingerprint") != fp) or (plan is None and directory.exists()):
                log.warning("%s: holds a probe of other texts or settings; synthesizing again", directory)
                shutil.rmtree(directory)
            write_json_atomic(directory / "plan.json", {"fingerprint": fp, "ids": [it["id"] for it in items]})
            synthesize_to_shar(text_cuts(items, source="probe"), backend, directory, batch_size=batch_size,
                               shard_size=max(len(items), 1), asr_filter=asr_filter, max_chars=max_chars,
                               progress=False)
            written = [(c.duration, len(c.supervisions[0].text or "")) for c in load_synthesized(directory)]
            marker = {"fingerprint": fp, "cluster": int(cluster), "n_probe": len(items), "n_written": len(written),
                      "audio_seconds": float(sum(d for d, _ in written)), "chars": int(sum(n for _, n in written))}
            write_json_atomic(directory / "probe.json", marker)
        results[cluster] = ProbeResult(cluster=int(cluster), n_probe=marker["n_probe"],
                                       n_written=marker["n_written"], audio_seconds=marker["audio_seconds"],
                                       chars=marker["chars"], fingerprint=fp)
    return results


def measure_probes(
    results: dict[int, ProbeResult],
    out_dir: str | Path,
    measure: Measure,
    tag: str,
    max_dropout: float = 0.5,
) -> dict[int, ProbeResult]:
    """Fill in ``misalignment`` (or ``excluded``) for each cluster, reusing stored ``m_<tag>.json`` values of the same
    probes measured under the same ``measure.definition`` (an attribute of the measure; None when it has none).

    Args:
        results (dict[int, ProbeResult]): from :func:`synthesize_probes`.
        out_dir (str | Path): the ``probes`` directory.
        measure (Callable[[CutSet], float]): M of a probe CutSet (e.g. ``nemo_salad.metrics.misalignment_fn``).
        tag (str): identifies the measured model (e.g. ``"stage1"``).
        max_dropout (float): exclude a cluster whose dropped fraction exceeds this. Default: 0.5.

    Returns:
        dict[int, ProbeResult]: the same objects, updated.

    Raises:
        ValueError: if ``measure`` returns a negative or non-finite value (naming the cluster).

    >>> measure_probes({0: ProbeResult(0, 4, 1, 5.0, 60, "f")}, "/nonexistent", lambda cuts: 1.0, "t")[0].excluded
    'probe drop-out 3/4 > 0.5 (CER filter or failed synthesis)'
    """
    from nemo_salad.synthesis import load_synthesized

    root = Path(out_dir)
    definition = getattr(measure, "definition", None)
    for cluster, result in sorted(results.items()):
        if result.n_written == 0 or result.n_dropped / result.n_probe > max_dropout:
            result.excluded = (f"probe drop-out {result.n_dropped}/{result.n_probe} > {max_dropout:g} "
                               "(CER filter or failed synthesis)")
            continue
        path = _cluster_dir(root, cluster) / f"m_{tag}.json"
        stored = read_json(path)
        if stored is not None and stored.get("fingerprint") == result.fingerprint \
                and stored.get("definition") == definition:
            result.misalignment = float(stored["misalignment"])
            continue
        value = float(measure(load_synthesized(_cluster_dir(root, cluster))))
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"measure returned M={value!r} for cluster {cluster} ({path.parent}); "
                             "expected a finite value >= 0 (a mean KL divergence)")
        result.misalignment = value
        write_json_atomic(path, {"fingerprint": result.fingerprint, "tag": tag, "misalignment": value,
                                 "n_items": result.n_written, "definition": definition})
    return results


def probe_table(results: dict[int, ProbeResult]) -> list[dict[str, Any]]:
    """Plain dicts of the results (for JSON), ordered by cluster.

    >>> probe_table({0: ProbeResult(0, 4, 3, 2.5, 40, "fp", 0.2)})[0]["n_dropped"]
    1
    """
    return [{**asdict(r), "n_dropped": r.n_dropped} for _, r in sorted(results.items())]
