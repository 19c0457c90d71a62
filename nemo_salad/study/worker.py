"""One step of the study in its own process: ``python -m nemo_salad.study.worker <dir>/spec.json``.

Each finished part leaves a file in the step's directory, and a rerun skips it: ``trained`` (training over; the
model is then read back from its ``.nemo``), ``heldout.json`` (F and M per held-out utterance), ``mc-<c>.json``
(M(c) on the probes of the ``clusters`` step ``<c>``, when that step is done), ``eval-<e>.json`` (per-item
results), and last ``result-<e>.json``, which marks the step done (``<e>``: the benchmark settings' fingerprint).
"""

from __future__ import annotations

import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["heldout_gap", "mc_name", "probe_misalignment", "result_name", "run_step"]


def _compose(spec: dict[str, Any], extra: dict[str, Any]) -> Any:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=spec["conf_dir"], version_base=None):
        cfg = compose(config_name=spec["step"]["config_name"], overrides=list(spec["train_overrides"]))
    OmegaConf.set_struct(cfg, False)  # the study's keys are checked by the training schema in build()
    return OmegaConf.merge(cfg, spec["step"]["settings"], extra)


def heldout_gap(model: Any, cuts: Any, layout: Any) -> list[dict[str, Any]]:
    """F and M sums of each held-out utterance (its own layout, seeded alike in every run, so runs pair up).

    Returns:
        list[dict]: ``id``, ``forgetting_sum``, ``forgetting_tokens``, ``misalignment_sum``, ``misalignment_tokens``
        (a skipped utterance has zero counts).
    """
    from lhotse import CutSet

    from nemo_salad.metrics.measure import measure_gap

    rows = []
    for cut in cuts:
        res = measure_gap(model, CutSet.from_cuts([cut]), layout, seed=0)
        m = res["misalignment"]
        rows.append({"id": cut.id, "forgetting_sum": res["forgetting"] * res["forgetting_tokens"],
                     "forgetting_tokens": res["forgetting_tokens"],
                     "misalignment_sum": 0.0 if math.isnan(m) else m * res["misalignment_tokens"],
                     "misalignment_tokens": res["misalignment_tokens"]})
    return rows


def probe_misalignment(model: Any, probes_dir: Path) -> dict[str, float]:
    """M of ``model`` on each cluster's spoken probes (``<probes_dir>/c<k>``)."""
    from nemo_salad.metrics import misalignment_fn
    from nemo_salad.synthesis import load_synthesized

    measure = misalignment_fn(model)
    out = {}
    for d in sorted(p for p in probes_dir.glob("c[0-9]*") if p.is_dir()):
        try:
            out[d.name] = float(measure(load_synthesized(d)))
        except ValueError as err:  # every probe of the cluster unusable: counted as missing, said in the log
            print(f"[study] {d.name}: not measured ({err})", flush=True)
    return out


def _evaluate(model: Any, spec: dict[str, Any], topline: bool) -> dict[str, Any]:
    import torch

    from nemo_salad.callbacks.run_report import OriginalLLM
    from nemo_salad.evaluation.config import speech_source
    from nemo_salad.evaluation.harness import ScoringSettings, evaluate
    from nemo_salad.evaluation.loaders import load_benchmark
    from nemo_salad.evaluation.systems import SpeechSystem, TextSystem

    ev = spec["eval"]
    benches = [load_benchmark(name, n_items=ev["n_items"], seed=ev["seed"]) for name in ev["benchmarks"]]
    systems: list[Any] = [SpeechSystem(model)]
    if topline:
        original = model.teacher if model.teacher is not None else OriginalLLM(model.llm)
        systems.insert(0, TextSystem(original, model.tokenizer, name="text_llm", role="topline"))
    else:
        systems.append(TextSystem(model.llm, model.tokenizer, name="speech_model_text", role="speech_text"))
    model.eval()
    with torch.no_grad():
        results = evaluate(benches, systems, ScoringSettings(**ev["scoring"]), speech_source(ev["tts"], progress=True))
    return results.to_dict()


def _data(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from nemo_salad.data.decontaminate import NgramIndex
    from nemo_salad.data.demo import demo_passages, prepare_demo

    demo = spec["demo"]  # with the number of synthesis processes, which the step's key leaves out
    root = prepare_demo(demo)
    parts = demo_passages(demo)
    used = Path(spec["used_passages"])
    used.parent.mkdir(parents=True, exist_ok=True)
    with open(used.with_suffix(".tmp"), "w", encoding="utf-8") as f:
        for part in parts.values():
            f.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in part)
    used.with_suffix(".tmp").replace(used)
    narrow = NgramIndex([t for _, t in parts["speech_train"]])
    return {"demo_dir": str(root), "parts": {p: len(v) for p, v in parts.items()},
            "overlap_with_training_speech": {p: int(narrow.contains_many([t for _, t in parts[p]]).sum())
                                             for p in ("speech_val", "text_replay")},
            "sources": {p: sorted({i.split("-")[0] for i, _ in v}) for p, v in parts.items()}}


def _clusters(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    from nemo_salad.selection import SelectionConfig
    from nemo_salad.selection.cli import CorpusConfig, load_corpus
    from nemo_salad.selection.round import prepare_probes
    from nemo_salad.synthesis import build_backend

    key = spec["step"]["key"]
    docs = load_corpus(CorpusConfig(**key["corpus"]))
    sel = SelectionConfig(**key["selection"])
    _, clusters, _, probes = prepare_probes(sel, [d.id for d in docs], [d.text for d in docs],
                                            build_backend(key["tts"]), out / "selection")
    return {"n_texts": len(docs), "k": sel.cluster.k, "sizes": [int(s) for s in clusters.sizes],
            "probes": {str(c): p.n_written for c, p in probes.items()}}


def _model(spec: dict[str, Any], out: Path) -> tuple[Any, Any, Any]:
    """The step's model (trained, or at step 0 for ``base``), its data module and composed config."""
    from nemo_salad.recipes.train import build

    step = spec["step"]
    extra: dict[str, Any] = {"exp_manager": {"exp_dir": str(out)}}
    if spec.get("init_from"):
        extra["init_from"] = spec["init_from"]
    if step["settings"].get("active_selection"):
        extra["active_selection"] = {"workdir": str(out / "selection")}
        if spec["clusters_done"]:
            _seed_selection(Path(spec["clusters_dir"]) / "selection", out / "selection" / "round_0000000")
    cfg = _compose(spec, extra)
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, out / "config.yaml")
    if step["kind"] == "train" and (out / "trained").is_file():
        from nemo_salad.models.salad import SaladModel

        model = SaladModel.restore_from(spec["exported"], map_location="cpu")
        return model, None, cfg
    trainer, model, data = build(cfg)
    if step["kind"] == "base":
        return model, data, cfg
    from nemo_salad.callbacks import GapReport

    next(cb for cb in trainer.callbacks if isinstance(cb, GapReport)).path = out / "gap.jsonl"
    trainer.fit(model, datamodule=data)
    if not Path(spec["exported"]).is_file():
        raise RuntimeError(f"training ended without writing {spec['exported']}")
    (out / "trained").write_text(f"step {trainer.global_step}\n")
    return model, data, cfg


def _seed_selection(shared: Path, work: Path) -> None:
    """Start an arm's selection round (at train start: ``round_0000000``) from the shared embeddings, clusters and
    spoken probes (fingerprint-checked by the round, which redoes any that do not match), without measured M(c)."""
    if work.exists() or not shared.is_dir():
        return
    shutil.copytree(shared, work, ignore=shutil.ignore_patterns("m_*.json"))


def run_step(spec_path: str | Path) -> dict[str, Any]:
    """Run (or resume) the step that ``spec_path`` describes; returns its result (also ``result-<e>.json``)."""
    from nemo_salad.selection.artefacts import write_json_atomic

    spec = json.loads(Path(spec_path).read_text())
    out, kind = Path(spec["step"]["dir"]), spec["step"]["kind"]
    e = spec["eval_fp"]
    started = time.monotonic()
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    result: dict[str, Any] = {"name": spec["step"]["name"], "kind": kind}
    if kind == "data":
        result.update(_data(spec, out))
    elif kind == "clusters":
        result.update(_clusters(spec, out))
    else:
        from nemo_salad.data.demo import demo_source

        model, data, cfg = _model(spec, out)
        model.eval()
        layout = data.layout if data is not None else _layout(cfg)
        held = out / "heldout.json"
        if not held.is_file():
            write_json_atomic(held, heldout_gap(model, demo_source("speech_val", spec["demo"]), layout))
        mc = out / mc_name(spec["clusters_fp"])
        if spec["clusters_done"] and not mc.is_file():
            write_json_atomic(mc, probe_misalignment(model, Path(spec["clusters_dir"]) / "selection" / "probes"))
        ev = out / f"eval-{e}.json"
        if not ev.is_file():
            write_json_atomic(ev, _evaluate(model, spec, topline=kind == "base"))
        result.update({"heldout": held.name, "clusters": mc.name if mc.is_file() else None, "eval": ev.name})
    timing = out / "minutes.json"
    spent = json.loads(timing.read_text()) if timing.is_file() else []
    spent.append(round((time.monotonic() - started) / 60, 3))
    write_json_atomic(timing, spent)
    result["minutes"] = sum(spent)
    write_json_atomic(out / result_name(kind, e), result)
    return result


def mc_name(clusters_fp: str) -> str:
    """The file of a model's M(c) on the probes of the ``clusters`` step with this fingerprint."""
    return f"mc-{clusters_fp}.json"


def result_name(kind: str, eval_fp: str) -> str:
    """The file that marks a step done: per measurement settings for a model, once for a preparation step.

    >>> result_name("train", "abc"), result_name("data", "abc")
    ('result-abc.json', 'result.json')
    """
    return f"result-{eval_fp}.json" if kind in ("base", "train") else "result.json"


def _layout(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    from nemo_salad.data.layout import LayoutConfig

    return LayoutConfig.from_section(OmegaConf.to_container(cfg.data.layout, resolve=True))


if __name__ == "__main__":
    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()
    run_step(sys.argv[1])
