"""Step 6 (report): per-cluster table of a selection round as JSON, and a bar chart of M(c) as PNG.

Columns per cluster: ``size`` and ``share`` (P_web), ``misalignment`` (M before, with the measure tag),
``p_target``, ``drawn`` and ``drawn_cost`` (items and seconds/tokens selected), probe counts and CER drop-outs,
``excluded`` (reason), and, once :func:`add_after_measurement` has run, ``misalignment_after``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.selection.artefacts import read_json, write_json_atomic
from nemo_salad.selection.probe import ProbeResult

__all__ = ["add_after_measurement", "build_report", "plot_report"]


def build_report(
    sizes: np.ndarray,
    probes: dict[int, ProbeResult],
    p_target: np.ndarray,
    drawn: np.ndarray,
    drawn_cost: np.ndarray,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """The report as a JSON-ready dict.

    Args:
        sizes (np.ndarray): (K,) texts per cluster.
        probes (dict[int, ProbeResult]): probe results with M or exclusion.
        p_target (np.ndarray): (K,) target distribution.
        drawn (np.ndarray): (K,) selected items per cluster.
        drawn_cost (np.ndarray): (K,) their cost (seconds or tokens).
        summary (dict): round-level values (budget, totals, seed, gamma, ...).

    Returns:
        dict: ``{"summary": ..., "clusters": [one dict per cluster]}``.

    >>> r = build_report(np.array([3, 1]), {0: ProbeResult(0, 2, 2, 1.0, 9, "f", 0.5)}, np.array([1.0, 0.0]),
    ...                  np.array([1, 0]), np.array([2.0, 0.0]), {"gamma": 5})
    >>> r["clusters"][0]["share"], r["clusters"][1]["excluded"]
    (0.75, 'no probe')
    """
    total = float(np.sum(sizes))
    rows = []
    for c in range(len(sizes)):
        probe = probes.get(c)
        rows.append({
            "cluster": c, "size": int(sizes[c]), "share": float(sizes[c]) / total,
            "misalignment": None if probe is None else probe.misalignment,
            "p_target": float(p_target[c]), "drawn": int(drawn[c]), "drawn_cost": float(drawn_cost[c]),
            "probe_n": 0 if probe is None else probe.n_probe,
            "probe_dropped": 0 if probe is None else probe.n_dropped,
            "excluded": "no probe" if probe is None else probe.excluded,
            "misalignment_after": None,
        })
    return {"summary": summary, "clusters": rows}


def plot_report(report: dict[str, Any], path: str | Path) -> None:
    """Bar chart of M(c) per cluster (before, and after when measured) with P_target, saved as PNG.

    >>> import tempfile
    >>> r = {"summary": {"measure_tag": "stage1"}, "clusters": [
    ...     {"cluster": 0, "misalignment": 0.4, "misalignment_after": 0.2, "p_target": 0.9, "excluded": None},
    ...     {"cluster": 1, "misalignment": None, "misalignment_after": None, "p_target": 0.0, "excluded": "cer"}]}
    >>> p = Path(tempfile.mkdtemp()) / "r.png"; plot_report(r, p); p.stat().st_size > 1000
    True
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = report["clusters"]
    k = len(rows)
    x = np.arange(k)
    before = np.array([np.nan if r["misalignment"] is None else r["misalignment"] for r in rows], float)
    after = np.array([np.nan if r.get("misalignment_after") is None else r["misalignment_after"] for r in rows],
                     float)
    has_after = bool(np.isfinite(after).any())
    width = 0.4 if has_after else 0.8
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(max(6.0, 0.09 * k + 3), 6), sharex=True,
                                  gridspec_kw={"height_ratios": [2, 1]})
    tag = report.get("summary", {}).get("measure_tag", "before")
    ax.bar(x - (width / 2 if has_after else 0), np.nan_to_num(before), width, label=f"M(c) {tag}", color="C0")
    if has_after:
        after_tag = report.get("summary", {}).get("after_tag", "after")
        ax.bar(x + width / 2, np.nan_to_num(after), width, label=f"M(c) {after_tag}", color="C1")
    excluded = [r["cluster"] for r in rows if r.get("excluded")]
    if excluded:
        ax.scatter(excluded, np.zeros(len(excluded)), marker="x", color="red", label="excluded (CER / no probe)")
    ax.set_ylabel("misalignment M(c)")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("Stage II active selection: per-cluster misalignment")
    ax2.bar(x, [r["p_target"] for r in rows], 0.8, color="C2")
    ax2.set_ylabel("P_target(c)")
    ax2.set_xlabel("cluster")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def add_after_measurement(
    workdir: str | Path,
    measure: Callable[[Any], float],
    tag: str = "after",
) -> dict[str, Any]:
    """Measure M(c) again on the same probe sets (e.g. after Stage II) and add ``misalignment_after`` to the
    round's ``report.json`` / ``report.png``. Values are stored per cluster as ``m_<tag>.json`` and reused.

    Args:
        workdir (str | Path): the round's directory (holding ``report.json`` and ``probes/``).
        measure (Callable[[CutSet], float]): misalignment of the current model on a probe CutSet.
        tag (str): names the measured model. Default: "after".

    Returns:
        dict: the updated report.

    Raises:
        FileNotFoundError: if the round has no report yet.

    >>> add_after_measurement("/nonexistent/round", lambda cuts: 0.1)
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent/round/report.json does not exist; run the selection round first
    """
    from nemo_salad.selection.probe import measure_probes

    workdir = Path(workdir)
    report = read_json(workdir / "report.json")
    if report is None:
        raise FileNotFoundError(f"{workdir / 'report.json'} does not exist; run the selection round first")
    probes = {}
    for row in report["clusters"]:
        marker = read_json(workdir / "probes" / f"c{row['cluster']:04d}" / "probe.json")
        if marker is not None and not row["excluded"]:
            probes[row["cluster"]] = ProbeResult(row["cluster"], marker["n_probe"], marker["n_written"],
                                                 marker["audio_seconds"], marker["chars"], marker["fingerprint"])
    measure_probes(probes, workdir / "probes", measure, tag, max_dropout=1.0)
    for row in report["clusters"]:
        probe = probes.get(row["cluster"])
        row["misalignment_after"] = None if probe is None else probe.misalignment
    measured = [r for r in report["clusters"] if r["misalignment_after"] is not None and r["misalignment"] is not None]
    report["summary"]["after_tag"] = tag
    report["summary"]["mean_misalignment_after"] = (
        float(np.mean([r["misalignment_after"] for r in measured])) if measured else None)
    write_json_atomic(workdir / "report.json", report)
    plot_report(report, workdir / "report.png")
    return report
