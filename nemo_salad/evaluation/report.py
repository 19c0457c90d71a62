"""Write a run's results: ``results.json``, ``results.md`` (the paper's Table 3 layout) and ``results.png``.

Table layout: one row per system, one column per benchmark holding ``accuracy / gap`` in percent (gap = text
topline accuracy minus the system's accuracy on the primary metric), plus the average gap; the topline row
shows its accuracy only. A second table gives the few-shot examples per item of each system and benchmark
(``mean (min–max)``, or the count when it is the same for every item), a third the items scored and skipped.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_salad.evaluation.results import EvalResults

__all__ = ["bar_panel", "markdown_table", "plot_results", "write_report"]

_METRIC_NAMES = {"sum": "acc (unnormalised)", "per_token": "acc per token", "per_char": "acc_norm (per character)"}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}"


def _shots_rule(settings: dict) -> str:
    """How the shot counts were chosen, in words."""
    if settings.get("shots") is not None:
        return f"exactly {settings['shots']} in every system"
    return (f"each system as many as fit its own {settings.get('max_tokens', '?')}-token context (speech frames "
            f"count as tokens), up to {settings.get('max_shots', '?')}")


def markdown_table(results: EvalResults) -> str:
    """The Table 3 style Markdown table of ``results``.

    >>> from nemo_salad.evaluation.results import BenchmarkResult, SystemScores
    >>> s = lambda name, role, acc: SystemScores(name, role, 10, acc, acc, acc, acc, 1.0, 10.0)
    >>> b = BenchmarkResult("copa", "COPA", "validation", "x", "y", 100, 10, 0.5, {},
    ...                     {"t": s("t", "topline", 0.7), "sp": s("sp", "speech", 0.6)})
    >>> systems = [{"name": "t", "role": "topline", "label": "Text"},
    ...            {"name": "sp", "role": "speech", "label": "Speech"}]
    >>> print(markdown_table(EvalResults([b], systems, {"primary": "per_char"})).splitlines()[5])
    | Speech | 60.0 / 10.0 | 10.0 |
    """
    primary = results.settings.get("primary", "per_char")
    cols = [b.title for b in results.benchmarks]
    lines = [f"Accuracy / gap (%), metric: {_METRIC_NAMES.get(primary, primary)}; gap = text topline − system.",
             "",
             "| System | " + " | ".join(cols) + " | Avg gap |",
             "|---|" + "---|" * (len(cols) + 1)]
    top = results.topline
    for sys in results.systems:
        cells = []
        for b in results.benchmarks:
            acc = b.systems[sys["name"]].primary
            cells.append(_pct(acc) if sys["name"] == top else f"{_pct(acc)} / {_pct(results.gap(b.name, sys['name']))}")
        avg = "–" if sys["name"] == top else _pct(results.average_gap(sys["name"]))
        lines.append(f"| {sys.get('label', sys['name'])} | " + " | ".join(cells) + f" | {avg} |")
    lines += ["", f"Few-shot examples per item, mean (min–max): {_shots_rule(results.settings)}.", "",
              "| System | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for sys in results.systems:
        cells = [b.systems[sys["name"]].shots_range for b in results.benchmarks]
        lines.append(f"| {sys.get('label', sys['name'])} | " + " | ".join(cells) + " |")
    lines += ["", "| Benchmark | items scored | skipped (reason: count) | chance | source |", "|---|---|---|---|---|"]
    for b in results.benchmarks:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b.skipped.items())) or "none"
        lines.append(f"| {b.title} | {b.n_items} | {skipped} | {_pct(b.chance)} | `{b.source}` |")
    return "\n".join(lines) + "\n"


def bar_panel(ax: Any, groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None],
                                                                     Sequence[tuple[float, float] | None]]],
              chance: Sequence[float] | None = None) -> None:
    """Grouped bars on ``ax``: one group per benchmark, one bar per series (labelled for a legend), with error bars
    where given.

    Args:
        ax (matplotlib.axes.Axes): the panel.
        groups (Sequence[str]): group (benchmark) titles.
        series (Sequence[tuple]): ``(label, heights, intervals)``; a height is None where the series has no value,
            an interval ``(low, high)`` (same units as the heights) or None for no error bar.
        chance (Sequence[float] | None): a dotted tick per group. Default: None.

    >>> import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
    >>> bar_panel(plt.subplots()[1], ["COPA"], [("text", [60.0], [(50.0, 70.0)])], chance=[50.0])
    """
    n_b, n_s = len(groups), len(series)
    width = 0.8 / max(n_s, 1)
    for j, (label, heights, intervals) in enumerate(series):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(n_b)]
        keep = [i for i in range(n_b) if heights[i] is not None]
        ys = [heights[i] for i in keep]
        ax.bar([xs[i] for i in keep], ys, width, label=label)
        bounds = [(i, intervals[i]) for i in keep if intervals[i] is not None]
        if bounds:
            err = [[max(heights[i] - lo, 0.0) for i, (lo, _) in bounds], [max(hi - heights[i], 0.0)
                                                                          for i, (_, hi) in bounds]]
            ax.errorbar([xs[i] for i, _ in bounds], [heights[i] for i, _ in bounds], yerr=err, fmt="none",
                        ecolor="black", elinewidth=0.8, capsize=2)
    for i, c in enumerate(chance or []):
        ax.hlines(c, i - 0.45, i + 0.45, colors="black", linestyles="dotted")
    ax.set_xticks(range(n_b), list(groups))
    ax.set_ylim(0, 100)


def plot_results(results: EvalResults, path: str | Path) -> Path:
    """Grouped bar chart of the primary accuracy per benchmark, one bar per system, chance as a tick.

    >>> plot_results(results, "results.png")  # doctest: +SKIP
    PosixPath('results.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(results.benchmarks) + 2), 4.0))
    series = [(sys.get("label", sys["name"]), [100 * b.systems[sys["name"]].primary for b in results.benchmarks],
               [None] * len(results.benchmarks)) for sys in results.systems]
    bar_panel(ax, [b.title for b in results.benchmarks], series, [100 * b.chance for b in results.benchmarks])
    ax.set_ylabel(f"accuracy (%), {results.settings.get('primary', 'per_char')}")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Text vs speech vs cascade (dotted: chance)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: EvalResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``; return their paths.

    >>> write_report(results, "salad_eval")["md"]  # doctest: +SKIP
    PosixPath('salad_eval/results.md')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(results.to_dict(), indent=1, ensure_ascii=False))
    paths["md"].write_text(markdown_table(results))
    plot_results(results, paths["png"])
    return paths
