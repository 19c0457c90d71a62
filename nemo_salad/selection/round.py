"""One Stage II active-selection round, end to end, with every step's artefact on disk:

``workdir/embeddings/`` (step 1) → ``clusters/`` (2) → ``probes/c<k>/`` synthesized probes and M(c) (3) →
P_target (4) → ``active/<fingerprint>/`` drawn, synthesized texts and ``selection.json`` (5) → ``report.json`` +
``report.png`` (6). Rerunning the same round (after a kill, or to read its result) reuses every finished artefact
whose input fingerprint still matches and yields the same selection for the same seed.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nemo_salad.data.text_corpus import TextDoc
from nemo_salad.selection.active import ActiveSelection, load_selection, select_and_synthesize
from nemo_salad.selection.artefacts import fingerprint, read_json, write_json_atomic
from nemo_salad.selection.cluster import cluster_step
from nemo_salad.selection.config import SelectionConfig
from nemo_salad.selection.embed import embed_texts
from nemo_salad.selection.encoders import TextEncoder, build_encoder
from nemo_salad.selection.probe import measure_probes, probe_indices, probe_table, synthesize_probes
from nemo_salad.selection.report import build_report, plot_report
from nemo_salad.selection.sample import DrawSequence
from nemo_salad.selection.target import cluster_shares, target_distribution

__all__ = ["SelectionResult", "prepare_probes", "run_selection_round"]

log = logging.getLogger(__name__)


@dataclass
class SelectionResult:
    """What a round produced.

    Attributes:
        cuts (CutSet): the selected synthesized cuts (lazy, with audio), ready for the training mixture.
        selection (ActiveSelection): ids, totals and budget bookkeeping.
        report (dict): the per-cluster report (also ``workdir/report.json``).
        workdir (Path): the round's directory.
        selection_dir (Path): the directory of ``selection.json`` (``load_selection`` reads it).

    >>> SelectionResult.__dataclass_fields__.keys() >= {"cuts", "report"}  # made by run_selection_round
    True
    """

    cuts: Any
    selection: ActiveSelection
    report: dict[str, Any]
    workdir: Path
    selection_dir: Path


def _token_counter(cfg: SelectionConfig, texts: Sequence[str],
                   count_tokens: Callable[[str], int] | None) -> Callable[[int], float] | None:
    if cfg.budget_unit != "tokens":
        return None
    if count_tokens is None:
        if not cfg.tokenizer:
            raise ValueError("budget_unit='tokens' needs a tokenizer: set selection.tokenizer to a local folder "
                             "or pass count_tokens")
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, local_files_only=True)
        count_tokens = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    cache: dict[int, float] = {}

    def cost(i: int) -> float:
        if i not in cache:
            cache[i] = float(count_tokens(texts[i]))
        return cache[i]

    return cost


def prepare_probes(cfg: SelectionConfig, ids: Sequence[str], texts: Sequence[str], backend: Any,
                   workdir: str | Path, *, asr_filter: Any = None, encoder: TextEncoder | None = None
                   ) -> tuple[TextEncoder, Any, dict[int, np.ndarray], dict[int, Any]]:
    """Steps 1-3 of a round without measuring: embed the corpus, cluster it, synthesize each cluster's probes (each
    step resumable under ``workdir``, as in :func:`run_selection_round`).

    Returns:
        tuple: the encoder, the :class:`BalancedKMeansResult`, the probe indices per cluster and the
        :class:`ProbeResult` per cluster.
    """
    workdir = Path(workdir)
    encoder = encoder or build_encoder(cfg.embed.encoder, cfg.embed.model, cfg.embed.batch_size, cfg.embed.dim)
    emb = embed_texts(list(texts), encoder, workdir / "embeddings", chunk_size=cfg.embed.chunk_size,
                      dtype=cfg.embed.dtype)
    emb_fp = read_json(workdir / "embeddings" / "embeddings.json")["fingerprint"]  # type: ignore[index]
    clusters = cluster_step(emb, emb_fp, workdir / "clusters", cfg.cluster.k, seed=cfg.seed, slack=cfg.cluster.slack,
                            n_iter=cfg.cluster.n_iter, refine_iter=cfg.cluster.refine_iter, metric=cfg.cluster.metric)
    probes_idx = probe_indices(clusters.assignments, cfg.probe_size, cfg.seed)
    probes = synthesize_probes(probes_idx, list(ids), list(texts), backend, workdir / "probes",
                               asr_filter=asr_filter, batch_size=cfg.batch_size, max_chars=cfg.max_chars)
    return encoder, clusters, probes_idx, probes


def run_selection_round(
    cfg: SelectionConfig | dict[str, Any],
    corpus: Sequence[TextDoc],
    measure: Callable[[Any], float],
    backend: Any,
    workdir: str | Path,
    *,
    asr_filter: Any = None,
    encoder: TextEncoder | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> SelectionResult:
    """Run (or resume) one selection round.

    Args:
        cfg (SelectionConfig | dict): the round's settings.
        corpus (Sequence[TextDoc]): the broad text corpus (unique ids).
        measure (Callable[[CutSet], float]): misalignment M of a probe CutSet under the current model.
        backend (TTSBackend): TTS engine for probes and selected texts.
        workdir (str | Path): the round's artefact directory.
        asr_filter (CERFilter | None): CER filter for synthesized speech. Default: None.
        encoder (TextEncoder | None): overrides ``cfg.embed``. Default: None.
        count_tokens (Callable[[str], int] | None): token counter for token budgets (else ``cfg.tokenizer``).

    Returns:
        SelectionResult: the selected cuts, the selection and the report.

    Raises:
        ValueError: for duplicate corpus ids, a corpus smaller than K, or no measurable cluster.

    >>> import tempfile
    >>> from nemo_salad.data.text_corpus import TextDoc
    >>> from nemo_salad.selection.encoders import HashingEncoder
    >>> from nemo_salad.synthesis import SineBackend
    >>> topics = ["Cats purr and nap in the sun.", "Stock markets fell on rate fears."]
    >>> docs = [TextDoc(f"d{i}", f"{topics[i % 2]} Note {i}.", "demo") for i in range(40)]
    >>> cats = lambda cuts: sum("Cats" in c.supervisions[0].text for c in cuts)
    >>> measure = lambda cuts: 2.0 if cats(cuts) > 1 else 1.0  # the model is misaligned on cats
    >>> cfg = SelectionConfig(cluster={"k": 2, "slack": 0.0}, probe_size=2, budget=0.01, gamma=5.0)
    >>> res = run_selection_round(cfg, docs, measure, SineBackend(), tempfile.mkdtemp(), encoder=HashingEncoder())
    >>> res.selection.total <= 36.0, cats(res.cuts) / len(res.selection.ids) > 0.7
    (True, True)
    """
    if isinstance(cfg, dict):
        cfg = SelectionConfig(**cfg)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ids = [d.id for d in corpus]
    texts = [d.text for d in corpus]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"corpus ids must be unique; {dup!r} occurs more than once")
    k = cfg.cluster.k
    if len(corpus) < k:
        raise ValueError(f"the corpus has {len(corpus)} texts, fewer than the K={k} clusters")

    # 1.-3. embed, cluster, synthesize the probes; then measure them
    encoder, clusters, probes_idx, probes = prepare_probes(cfg, ids, texts, backend, workdir, asr_filter=asr_filter,
                                                           encoder=encoder)
    assign = clusters.assignments
    measure_probes(probes, workdir / "probes", measure, cfg.measure_tag, cfg.max_probe_dropout)
    m = np.array([np.nan if probes.get(c) is None or probes[c].misalignment is None else probes[c].misalignment
                  for c in range(k)])
    if not np.isfinite(m).any():
        raise ValueError(f"no cluster could be measured: every probe was dropped (see {workdir / 'probes'})")
    # 4. target distribution
    share = cluster_shares(assign, k)
    p_target = target_distribution(share, m, cfg.gamma)
    # 5. sample within the budget and synthesize
    eligible = np.ones(len(ids), bool)
    for members in probes_idx.values():
        eligible[members] = False  # probe texts stay out of training so that M(c) after Stage II is unbiased
    kept = [p for p in probes.values() if p.n_written]
    seconds_per_char = sum(p.audio_seconds for p in kept) / max(1, sum(p.chars for p in kept))
    token_cost = _token_counter(cfg, texts, count_tokens)
    unit = "tokens" if cfg.budget_unit == "tokens" else "seconds"
    budget = cfg.budget if unit == "tokens" else cfg.budget * 3600.0
    extra = {"seed": cfg.seed, "gamma": cfg.gamma, "p_target": p_target.tolist(), "misalignment_tag": cfg.measure_tag,
             "clusters": hashlib.sha256(assign.tobytes()).hexdigest(), "probes": [p.fingerprint for p in kept],
             "provenance": dict(backend.provenance()), "max_chars": cfg.max_chars}
    selection_dir = workdir / "active" / fingerprint(extra, budget, unit, m.tolist())[:16]
    order = DrawSequence(assign, p_target, seed=cfg.seed, eligible=eligible)
    selection = select_and_synthesize(
        order, ids, texts, selection_dir, budget=budget, unit=unit, backend=backend,
        estimate=lambda i: len(texts[i]) * seconds_per_char, token_cost=token_cost, asr_filter=asr_filter,
        batch_size=cfg.batch_size, shard_size=cfg.shard_size, max_chars=cfg.max_chars,
        extra={**extra, "seconds_per_char": seconds_per_char})
    # 6. report
    chosen = np.array(selection.indices, np.int64)
    drawn = np.bincount(assign[chosen], minlength=k) if chosen.size else np.zeros(k, np.int64)
    costs = _selected_costs(selection, selection_dir, token_cost, ids)
    drawn_cost = np.bincount(assign[chosen], weights=costs, minlength=k) if chosen.size else np.zeros(k)
    summary = {"k": k, "n_texts": len(ids), "gamma": cfg.gamma, "seed": cfg.seed, "budget": cfg.budget,
               "budget_unit": cfg.budget_unit, "selected_items": len(selection.ids),
               "selected_total": selection.total, "selected_unit": unit, "stop_cost": selection.stop_cost,
               "exhausted": selection.exhausted, "synthesis_dropped": selection.n_dropped,
               "seconds_per_char": seconds_per_char, "measure_tag": cfg.measure_tag, "encoder": encoder.name,
               "cluster_bounds": list(clusters.bounds), "excluded_clusters": sum(p.excluded is not None
                                                                                  for p in probes.values()),
               "selection_dir": str(selection_dir.relative_to(workdir)), "config": asdict(cfg)}
    report = build_report(clusters.sizes, probes, p_target, drawn, drawn_cost, summary)
    report["probes"] = probe_table(probes)
    write_json_atomic(workdir / "report.json", report)
    plot_report(report, workdir / "report.png")
    log.info("selection round: %d items, %.1f %s of %.1f; %d clusters excluded", len(selection.ids),
             selection.total, unit, budget, summary["excluded_clusters"])
    return SelectionResult(load_selection(selection_dir), selection, report, workdir, selection_dir)


def _selected_costs(selection: ActiveSelection, selection_dir: Path, token_cost: Callable[[int], float] | None,
                    ids: Sequence[str]) -> np.ndarray:
    if token_cost is not None:
        return np.array([token_cost(i) for i in selection.indices], np.float64)
    durations: dict[str, float] = {}
    for part in selection.parts:
        durations.update(read_json(selection_dir / part / "part.json")["durations"])  # type: ignore[index]
    return np.array([durations[i] for i in selection.ids], np.float64)
