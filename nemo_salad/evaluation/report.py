"""Write a run's results: ``results.json``, ``results.md`` (the paper's Table 3 layout) and ``results.png``.

Table layout: one row per system, one column per benchmark holding ``accuracy / gap`` in percent (gap = text
topline accuracy minus the system's accuracy on the primary metric), plus the average gap; the topline row
shows its accuracy only. A second table gives the few-shot examples per item of each system and benchmark
(``mean (min–max)``, or the count when it is the same for every item), a third the items scored and skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

from nemo_salad.evaluation.results import EvalResults

__all__ = ["markdown_table", "plot_results", "write_report"]

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


def plot_results(results: EvalResults, path: str | Path) -> Path:
    """Grouped bar chart of the primary accuracy per benchmark, one bar per system, chance as a tick.

    >>> plot_results(results, "results.png")  # doctest: +SKIP
    PosixPath('results.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [s["name"] for s in results.systems]
    n_b, n_s = len(results.benchmarks), len(names)
    width = 0.8 / max(n_s, 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * n_b + 2), 4.0))
    for j, sys in enumerate(results.systems):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(n_b)]
        ys = [100 * b.systems[sys["name"]].primary for b in results.benchmarks]
        ax.bar(xs, ys, width, label=sys.get("label", sys["name"]))
    for i, b in enumerate(results.benchmarks):
        ax.hlines(100 * b.chance, i - 0.45, i + 0.45, colors="black", linestyles="dotted")
    ax.set_xticks(range(n_b), [b.title for b in results.benchmarks])
    ax.set_ylabel(f"accuracy (%), {results.settings.get('primary', 'per_char')}")
    ax.set_ylim(0, 100)
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
