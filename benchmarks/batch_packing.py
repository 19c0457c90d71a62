"""Padded positions and step time with one sample per row ("before") vs samples packed into rows ("after").

The same training batches — drawn by the data module's own sampler from the embedded demo corpus (speech and text
replay, as ``conf/stage1.yaml`` mixes them) — are collated twice by the dataset: ``pack_length: null`` (one sample
per row, right-padded to the longest) and ``pack_length: N`` (packing, attention and positions inside each
sample). For each layout the script reports the padded fraction of student + teacher positions, the collation time
(what a data-loader worker spends) and the training-step time (encoder, adapter, student and teacher forward, fused
loss, backward, AdamW) from the same initial weights, and checks that both layouts give the same loss on every batch
(eval mode, the initial weights).

    python benchmarks/batch_packing.py --model default --batches 8              # the embedded default (CPU)
    python benchmarks/batch_packing.py --model 1b --batches 3 --batch-duration 40 --no-optimizer  # 1B-class student
    python benchmarks/batch_packing.py --model 1b --batches 16 --batch-duration 600 --no-step  # recipe-size batches

The demo corpus is built on first use (a few minutes, cached under ``$SALAD_CACHE``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch

MODELS = {
    "default": [],
    "1b": ["model/llm=tiny", "model.llm.arch=llama3.2-1b", "model/teacher=copy", "model/encoder=fastconformer_small",
           "model/adapter=causal_small"],
}


def _build(model_name: str, batch_duration: float | None) -> tuple[Any, Any]:
    from nemo_salad.models.build import llm_source_dir
    from nemo_salad.models.salad import SaladModel
    from nemo_salad.recipes.bench import compose_config

    overrides = list(MODELS[model_name])
    if model_name != "default":  # random weights; SmolLM2's tokenizer (its ids fit any of these vocabularies)
        overrides.append(f"model.tokenizer.dir={llm_source_dir('smollm2')}")
    if batch_duration:
        overrides.append(f"data.batch_duration={batch_duration}")
    cfg = compose_config("stage1", overrides)
    torch.manual_seed(0)
    return cfg, SaladModel(cfg.model).train()


def _cut_batches(cfg: Any, model: Any, n: int) -> tuple[Any, list[Any]]:
    from nemo_salad.data.datamodule import SaladDataModule

    data = SaladDataModule(cfg.data, model.tokenizer, model.frame_counter(float(cfg.data.max_duration)), model.pad_id,
                           model.context_length)
    data.setup("fit")
    stream = iter(data.mixture)
    return data, [next(stream) for _ in range(n)]


def _layout(data: Any, cut_batches: list[Any], pack_length: int | None) -> tuple[list[Any], float]:
    data.cfg["pack_length"] = pack_length
    dataset = data.dataset()
    start = time.perf_counter()
    batches = [dataset[cuts] for cuts in cut_batches]
    return batches, (time.perf_counter() - start) / len(batches)


@torch.no_grad()
def _eval_losses(model: Any, state: dict[str, Any], batches: list[Any]) -> list[float]:
    """Each batch's loss at ``state`` in eval mode (no dropout: the two layouts must agree)."""
    model.load_state_dict(state)
    model.eval()
    losses = [float(model.compute_loss(batch).loss) for batch in batches]
    model.train()
    return losses


def _steps(model: Any, state: dict[str, Any], batches: list[Any], optim: dict[str, Any] | None) -> list[float]:
    """Training-step time per batch from ``state``, after one untimed warm-up step; ``optim`` None: forward and
    backward only (no update)."""
    from nemo_salad.parts.optim import build_optimizer

    model.load_state_dict(state)
    opt = build_optimizer(model, optim, max_steps=len(batches) + 1)["optimizer"] if optim is not None else None
    times = []
    for i, batch in enumerate([batches[0], *batches]):  # the first pass over batch 0 warms up (not timed)
        start = time.perf_counter()
        model.zero_grad(set_to_none=True)
        out = model.compute_loss(batch)
        out.loss.backward()
        if opt is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        if i:
            times.append(time.perf_counter() - start)
    model.load_state_dict(state)
    return times


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from nemo_salad.llm.parallel import init_model_parallel

    init_model_parallel()
    cfg, model = _build(args.model, args.batch_duration)
    data, cut_batches = _cut_batches(cfg, model, args.batches)
    state = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in model.state_dict().items()}
    optim = None if args.no_optimizer else dict(cfg.model.optim)
    rows, first = [], None
    for name, pack in (("one sample per row", None), (f"packed to {args.pack_length}", args.pack_length)):
        batches, collate_s = _layout(data, cut_batches, pack)
        padded = statistics.fmean(b.padded_fraction for b in batches)
        row = {"layout": name, "padded": padded, "collate_ms": 1e3 * collate_s,
               "rows": statistics.fmean(b.student_ids.shape[0] for b in batches),
               "width": statistics.fmean(b.student_ids.shape[1] for b in batches),
               "positions": statistics.fmean(int(b.student_mask.sum()) + int(b.teacher_mask.sum()) for b in batches)}
        if not args.no_step:
            losses = _eval_losses(model, state, batches)
            first = first or losses
            row.update(step_s=statistics.fmean(_steps(model, state, batches, optim)), loss=losses,
                       max_loss_diff=max(abs(a - b) for a, b in zip(losses, first)))
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="default")
    parser.add_argument("--batches", type=int, default=8, help="training batches drawn from the mixture")
    parser.add_argument("--batch-duration", type=float, default=None, help="data.batch_duration (default: config)")
    parser.add_argument("--pack-length", type=int, default=2048)
    parser.add_argument("--no-step", action="store_true", help="collation only (no training steps)")
    parser.add_argument("--no-optimizer", action="store_true",
                        help="steps are forward + backward only (the update does not depend on the layout; a 1B-class "
                             "AdamW state does not fit a 24 GB CPU machine)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args)
    step = "forward + backward" if args.no_optimizer else "forward + backward + AdamW"
    step = "none (collation only)" if args.no_step else step
    print(f"\nmodel {args.model}, {args.batches} batches, batch_duration {args.batch_duration or 'config'}, "
          f"{torch.get_num_threads()} CPU threads, step = {step}")
    print("| layout | rows × width | real positions | padded | collate (ms/batch) | step (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        step = f"{r['step_s']:.2f}" if "step_s" in r else "—"
        print(f"| {r['layout']} | {r['rows']:.1f} × {r['width']:.0f} | {r['positions']:.0f} | "
              f"{100 * r['padded']:.1f} % | {r['collate_ms']:.0f} | {step} |")
    if "step_s" in rows[0]:
        print(f"\nstep time packed / one per row: {rows[1]['step_s'] / rows[0]['step_s']:.2f}×; padded fraction "
              f"{100 * rows[0]['padded']:.1f} % → {100 * rows[1]['padded']:.1f} %; largest difference of a "
              f"batch's loss (eval mode, initial weights) {rows[1]['max_loss_diff']:.2e}")


if __name__ == "__main__":
    main()
