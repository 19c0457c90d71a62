"""``results.json`` / ``results.md`` / ``results.png`` of an evaluation run: every protocol, condition and seed.

``results.md`` opens with the run (protocols, conditions, error bars); each table below sits under a caption line
that states its protocol, shots (rule and seeds), conditions, interval level and resamples, and items per
benchmark. Per protocol:

* ``loglik`` — the paper's Table 3 (accuracy / gap, mean over seeds, main condition); accuracy per system and
  condition, ``mean ± std over seeds [interval]``; the gap ``topline − system`` with paired intervals; the spread
  over conditions (``max − min / std``, percentage points); few-shot examples per item; items scored and skipped;
* ``generate`` — accuracy with intervals and the fail-rate column (failed extractions over all items); the fail
  rate per benchmark; the gap with intervals; the spread; items scored and skipped;
* spoken StoryCloze — accuracy with intervals per set and mode ("n/a" where a system defines no score); the gap;
  pairs scored.

A cell whose interval covers fewer items than its benchmark's count in the caption says ``(n=...)``.
``results.png`` has one panel per protocol: grouped bars (main condition, then the extra conditions of the rows
that hear audio) with the intervals as error bars. ``results.json`` is :meth:`RunResults.to_dict`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nemo_salad.evaluation.report import _METRIC_NAMES, _pct, _shots_rule, bar_panel
from nemo_salad.evaluation.runner import RunResults
from nemo_salad.evaluation.summary import AVERAGE, Stat, Summary

__all__ = ["plot_run", "run_markdown", "write_run_report"]

_TITLES = {"loglik": "Log-likelihood (loglik)", "generate": "Generate-then-extract (generate)",
           "storycloze": "Spoken StoryCloze"}


def _cell(stat: Stat | None, n_items: int | None = None) -> str:
    """``mean ± std [low, high] (n=..)`` in percent; "n/a" for no statistic."""
    if stat is None:
        return "n/a"
    text = _pct(stat.mean)
    if stat.std is not None:
        text += f" ± {100 * stat.std:.1f}"
    if stat.low is not None and stat.high is not None:
        text += f" [{_pct(stat.low)}, {_pct(stat.high)}]"
    if n_items is not None and stat.n != n_items:
        text += f" (n={stat.n})"
    return text


def _columns(run: RunResults, protocol: str) -> list[tuple[str, str]]:
    """``(key, title)`` of the benchmark columns of a protocol's tables (the average last, when computed)."""
    if protocol == "storycloze":
        return [(f"{r.name}/{r.mode}", f"{r.name} {r.mode.replace('_', ' ')}") for r in run.storycloze]
    cols = [(b["name"], b["title"]) for b in run.benchmarks]
    if any(c.benchmark == AVERAGE for c in run.summaries[protocol].cells):
        cols.append((AVERAGE, "Avg"))
    return cols


def _items(run: RunResults, protocol: str) -> dict[str, int]:
    """Items per benchmark column: those of the first system in the main condition."""
    summary, first = run.summaries[protocol], run.systems[0]["name"]
    out = {}
    for key, _ in _columns(run, protocol):
        stat = summary.cell(run.main, first, key) or next((c for c in summary.cells if c.benchmark == key), None)
        if stat is not None:
            out[key] = stat.n
    return out


def _conditions(run: RunResults, protocol: str) -> list[Any]:
    return [c for c in run.conditions if c.systems] if protocol != "storycloze" else run.conditions[:1]


def _about(run: RunResults, protocol: str) -> str:
    """The section's opening paragraph: the protocol, the conditions and the error bars in full."""
    iv = run.intervals
    if protocol == "loglik":
        what = (f"Few-shot log-likelihood scoring of the options, metric "
                f"{_METRIC_NAMES.get(run.scoring.primary, run.scoring.primary)}. Shots: "
                f"{_shots_rule(vars(run.scoring))}; the shots are drawn with each few-shot seed "
                f"({', '.join(map(str, run.seeds))})" + (", ± is the std over seeds (n − 1)." if len(run.seeds) > 1
                                                         else "."))
    elif protocol == "generate":
        g = run.generation
        decoding = "greedy decoding" if g.temperature == 0 else f"sampling at temperature {g.temperature:g}"
        what = (f"Zero-shot: the question, the lettered options (options spoken: {'yes' if g.options_spoken else 'no'}"
                f") and an instruction; {decoding}, at most {g.max_new_tokens} new tokens; the chosen letter is "
                f"extracted by rules (nemo_salad.evaluation.extract); a failed extraction counts in the fail rate and "
                f"is scored with a random option seeded by (seed {g.seed}, item).")
    else:
        what = ("Zero-shot; per pair, the version with the higher mean log-likelihood per token wins, a tie counts "
                "0.5 (nemo_salad.evaluation.storycloze_spoken).")
    conds = _conditions(run, protocol)
    where = "Conditions: " + "; ".join(f"{c.name} ({c.describe()})" for c in conds) + "."
    if len(conds) > 1:
        where += f" Text rows do not depend on the condition and are scored once, in {run.main}."
    bars = (f"Intervals: {100 * iv['level']:g}% percentile bootstrap over items, {iv['bootstrap']} resamples (seed "
            f"{iv['seed']}); an average over benchmarks resamples the items within each benchmark; a gap is paired "
            "(topline and system on the same items)." if iv["bootstrap"] else "Intervals: none (bootstrap: 0).")
    return f"{what} {where} {bars}"


def _caption(run: RunResults, protocol: str) -> str:
    """The line above every table: protocol, shots (rule and seeds), conditions, intervals, items."""
    iv = run.intervals
    if protocol == "loglik":
        sc = run.scoring
        rule = (f"exactly {sc.shots}" if sc.shots is not None
                else f"≤ {sc.max_shots}, as many as fit each system's {sc.max_tokens}-token context")
        what = (f"loglik, {_METRIC_NAMES.get(sc.primary, sc.primary)} · shots: {rule}; seeds "
                f"{', '.join(map(str, run.seeds))}")
    elif protocol == "generate":
        what = f"generate · shots: 0; seed {run.generation.seed}"
    else:
        what = "spoken StoryCloze · shots: 0"
    conds = ", ".join(c.name for c in _conditions(run, protocol))
    bars = f"{100 * iv['level']:g}% bootstrap, {iv['bootstrap']} resamples" if iv["bootstrap"] else "no intervals"
    titles = dict(_columns(run, protocol))
    items = ", ".join(f"{titles[k]} {n}" for k, n in _items(run, protocol).items() if k != AVERAGE)
    return f"_{what} · conditions: {conds} · intervals: {bars} · items: {items}_"


def _rows(run: RunResults, summary: Summary, gaps: bool) -> list[tuple[str, str, str]]:
    """``(label, condition, system)`` of the rows that have a statistic, systems in order, conditions in order."""
    stats = summary.gaps if gaps else summary.cells
    have = {(c.condition, c.system) for c in stats}
    return [(s["label"], c.name, s["name"]) for s in run.systems for c in run.conditions if (c.name, s["name"]) in have]


def _stat_table(run: RunResults, protocol: str, gaps: bool, extra: dict[tuple[str, str], str] | None = None,
                extra_title: str = "") -> list[str]:
    summary = run.summaries[protocol]
    cols, items = _columns(run, protocol), _items(run, protocol)
    multi = len({c for _, c, _ in _rows(run, summary, gaps)}) > 1
    head = "| System |" + (" Condition |" if multi else "") + "".join(f" {t} |" for _, t in cols)
    head += f" {extra_title} |" if extra is not None else ""
    n_cols = 1 + multi + len(cols) + (extra is not None)
    lines = [head, "|" + "---|" * n_cols]
    for label, cond, name in _rows(run, summary, gaps):
        look = summary.gap if gaps else summary.cell
        cells = [_cell(look(cond, name, k), items.get(k)) for k, _ in cols]
        row = f"| {label} |" + (f" {cond} |" if multi else "") + "".join(f" {c} |" for c in cells)
        lines.append(row + (f" {extra.get((cond, name), '–')} |" if extra is not None else ""))
    return lines


def _spread_table(run: RunResults, protocol: str) -> list[str]:
    summary = run.summaries[protocol]
    if not summary.spread:
        return []
    cols = _columns(run, protocol)
    labels = {s["name"]: s["label"] for s in run.systems}
    lines = [_caption(run, protocol), "",
             "Spread over conditions (percentage points): max − min / std over conditions (n − 1).", "",
             "| System |" + "".join(f" {t} |" for _, t in cols), "|" + "---|" * (len(cols) + 1)]
    for name in dict.fromkeys(s.system for s in summary.spread):
        by = {s.benchmark: s for s in summary.spread if s.system == name}
        cells = [f"{100 * by[k].range:.1f} / {'–' if by[k].std is None else f'{100 * by[k].std:.1f}'}" if k in by
                 else "–" for k, _ in cols]
        lines.append(f"| {labels[name]} |" + "".join(f" {c} |" for c in cells))
    return lines + [""]


def _table3(run: RunResults) -> list[str]:
    """The paper's layout: accuracy / gap (mean over seeds, main condition), average gap."""
    s, top = run.summaries["loglik"], run.topline
    cols = [(b["name"], b["title"]) for b in run.benchmarks]
    lines = ["| System |" + "".join(f" {t} |" for _, t in cols) + " Avg gap |", "|" + "---|" * (len(cols) + 2)]
    for sys in run.systems:
        name, cells = sys["name"], []
        for key, _ in cols:
            acc, gap = s.cell(run.main, name, key), s.gap(run.main, name, key)
            acc_text = _pct(acc.mean if acc else None)
            cells.append(acc_text if name == top else f"{acc_text} / {_pct(gap.mean if gap else None)}")
        avg = s.gap(run.main, name, AVERAGE) if len(cols) > 1 else s.gap(run.main, name, cols[0][0])
        lines.append(f"| {sys['label']} |" + "".join(f" {c} |" for c in cells)
                     + f" {'–' if name == top else _pct(avg.mean if avg else None)} |")
    return lines


def _loglik_md(run: RunResults) -> list[str]:
    cap = _caption(run, "loglik")
    primary = run.primary
    lines = [f"## {_TITLES['loglik']}", "", _about(run, "loglik"), "", cap, "",
             "Accuracy / gap (%), mean over seeds, condition " + run.main + "; gap = text topline − system.", "",
             *_table3(run), "", cap, "", "Accuracy (%): mean" + (" ± std over seeds" if len(run.seeds) > 1 else "")
             + " [interval].", "", *_stat_table(run, "loglik", gaps=False), ""]
    if run.summaries["loglik"].gaps:
        lines += [cap, "", "Gap (%) = text topline − system, paired on the same items: mean"
                  + (" ± std over seeds" if len(run.seeds) > 1 else "") + " [interval].", "",
                  *_stat_table(run, "loglik", gaps=True), ""]
    lines += _spread_table(run, "loglik")
    if primary is not None:
        cols = [b.title for b in primary.benchmarks]
        lines += [cap, "", f"Few-shot examples per item, mean (min–max), seed {run.seeds[0]}, condition {run.main}.",
                  "", "| System |" + "".join(f" {c} |" for c in cols), "|" + "---|" * (len(cols) + 1)]
        for sys in primary.systems:
            lines.append(f"| {sys['label']} |" + "".join(f" {b.systems[sys['name']].shots_range} |"
                                                          for b in primary.benchmarks))
        lines += ["", cap, "", f"Items scored and skipped (seed {run.seeds[0]}, condition {run.main}).", "",
                  "| Benchmark | items scored | skipped (reason: count) | chance | source |", "|---|---|---|---|---|"]
        for b in primary.benchmarks:
            skipped = ", ".join(f"{k}: {v}" for k, v in sorted(b.skipped.items())) or "none"
            lines.append(f"| {b.title} | {b.n_items} | {skipped} | {_pct(b.chance)} | `{b.source}` |")
        lines.append("")
    return lines


def _generate_md(run: RunResults) -> list[str]:
    cap = _caption(run, "generate")
    pooled: dict[tuple[str, str], str] = {}
    per_bench: dict[tuple[str, str, str], float] = {}
    for r in run.generate:
        for name in {n for systems in r.benchmarks.values() for n in systems}:
            outs = [(b, systems[name]) for b, systems in r.benchmarks.items() if name in systems]
            pooled[(r.condition, name)] = _pct(sum(o["n_failed"] for _, o in outs) / sum(o["n"] for _, o in outs))
            per_bench.update({(r.condition, name, b): o["fail_rate"] for b, o in outs})
    lines = [f"## {_TITLES['generate']}", "", _about(run, "generate"), "", cap, "",
             "Accuracy (%): mean [interval]; fail rate (%): failed extractions over all items.", "",
             *_stat_table(run, "generate", gaps=False, extra=pooled, extra_title="Fail rate (%)"), "",
             cap, "", "Fail rate per benchmark (%).", ""]
    rows = _rows(run, run.summaries["generate"], gaps=False)
    multi = len({c for _, c, _ in rows}) > 1
    lines += ["| System |" + (" Condition |" if multi else "") + "".join(f" {b['title']} |" for b in run.benchmarks),
              "|" + "---|" * (1 + multi + len(run.benchmarks))]
    for label, cond, name in rows:
        lines.append(f"| {label} |" + (f" {cond} |" if multi else "") + "".join(
            f" {_pct(per_bench.get((cond, name, b['name'])))} |" for b in run.benchmarks))
    lines.append("")
    if run.summaries["generate"].gaps:
        lines += [cap, "", "Gap (%) = text topline − system, paired on the same items: mean [interval].", "",
                  *_stat_table(run, "generate", gaps=True), ""]
    lines += _spread_table(run, "generate")
    main = next(r for r in run.generate if r.condition == run.main)
    lines += [cap, "", f"Items scored and skipped (condition {run.main}).", "",
              "| Benchmark | items scored | skipped (reason: count) | chance |", "|---|---|---|---|"]
    for b in run.benchmarks:
        out = next(iter(main.benchmarks[b["name"]].values()))
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(out["skipped"].items())) or "none"
        lines.append(f"| {b['title']} | {out['n']} | {skipped} | {_pct(b['chance'])} |")
    return lines + [""]


def _storycloze_md(run: RunResults) -> list[str]:
    cap = _caption(run, "storycloze")
    lines = [f"## {_TITLES['storycloze']}", "", _about(run, "storycloze"), "", cap, "",
             "Accuracy (%): mean [interval]; n/a: the system defines no score in that mode.", "",
             *_stat_table(run, "storycloze", gaps=False), ""]
    if run.summaries["storycloze"].gaps:
        lines += [cap, "", "Gap (%) = text topline − system, paired on the same pairs: mean [interval].", "",
                  *_stat_table(run, "storycloze", gaps=True), ""]
    lines += [cap, "", "| Set | Mode | pairs scored | skipped (reason: count) | source |", "|---|---|---|---|---|"]
    for r in run.storycloze:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(r.skipped.items())) or "none"
        lines.append(f"| {r.name} | {r.mode} | {r.n_pairs} | {skipped} | `{r.source}` |")
    return lines + [""]


def run_markdown(run: RunResults) -> str:
    """The whole ``results.md`` of ``run`` (layout in the module docstring).

    >>> print(run_markdown(run).splitlines()[0])  # doctest: +SKIP
    # Evaluation results
    """
    iv = run.intervals
    lines = ["# Evaluation results", "",
             f"Protocols: {', '.join([*run.protocols, *(['spoken StoryCloze'] if run.storycloze else [])])}. Systems: "
             + ", ".join(s["label"] for s in run.systems) + ".",
             "Conditions: " + "; ".join(f"{c.name} ({c.describe()}; systems: {', '.join(s.name for s in c.systems)})"
                                        for c in run.conditions) + ".",
             (f"Error bars: {100 * iv['level']:g}% percentile bootstrap intervals over items, {iv['bootstrap']} "
              f"resamples (seed {iv['seed']})." if iv["bootstrap"] else "Error bars: none (bootstrap: 0)."), ""]
    if "loglik" in run.protocols:
        lines += _loglik_md(run)
    if "generate" in run.protocols:
        lines += _generate_md(run)
    if run.storycloze:
        lines += _storycloze_md(run)
    return "\n".join(lines).rstrip() + "\n"


def _series(run: RunResults, protocol: str, keys: list[str]) -> list[tuple[str, list, list]]:
    summary, out = run.summaries[protocol], []
    for label, cond, name in _rows(run, summary, gaps=False):
        stats = [summary.cell(cond, name, k) for k in keys]
        out.append((label + ("" if cond == run.main else f" [{cond}]"),
                    [None if s is None else 100 * s.mean for s in stats],
                    [None if s is None or s.low is None else (100 * s.low, 100 * s.high) for s in stats]))
    return out


def plot_run(run: RunResults, path: str | Path) -> Path:
    """One panel per protocol: accuracy per benchmark (and on average) with the intervals as error bars.

    >>> plot_run(run, "results.png")  # doctest: +SKIP
    PosixPath('results.png')
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p in ("loglik", "generate", "storycloze") if p in run.summaries]
    widths = [len(_columns(run, p)) for p in panels]
    size = (max(6.0, 1.6 * max(widths, default=1) + 2) + 3.0, 4.0 * len(panels))
    fig, axes = plt.subplots(len(panels), 1, figsize=size, squeeze=False)
    chance = {b["name"]: 100 * b["chance"] for b in run.benchmarks}
    chance[AVERAGE] = sum(chance.values()) / max(len(chance), 1)
    for ax, protocol in zip(axes[:, 0], panels, strict=True):
        cols = _columns(run, protocol)
        keys = [k for k, _ in cols]
        bar_panel(ax, [t for _, t in cols], _series(run, protocol, keys),
                  [chance.get(k, 50.0) for k in keys])
        level = run.intervals["level"]
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_title(f"{_TITLES[protocol]} (bars: {100 * level:g}% bootstrap intervals; dotted: chance)"
                     if run.intervals["bootstrap"] else f"{_TITLES[protocol]} (dotted: chance)", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_run_report(run: RunResults, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` of ``run`` into ``out_dir``; return their paths.

    >>> write_run_report(run, "salad_eval")["md"]  # doctest: +SKIP
    PosixPath('salad_eval/results.md')
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "md": out / "results.md", "png": out / "results.png"}
    paths["json"].write_text(json.dumps(run.to_dict(), indent=1, ensure_ascii=False, default=_jsonable))
    paths["md"].write_text(run_markdown(run))
    plot_run(run, paths["png"])
    return paths


def _jsonable(x: Any) -> Any:
    """Fallback for ``json.dumps``: numpy scalars and other values as plain numbers or strings."""
    if hasattr(x, "item"):
        return x.item()
    return str(x)
