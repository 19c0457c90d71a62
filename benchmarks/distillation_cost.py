"""What distillation costs: step time of α=1 (distillation) vs α=0 (NLL only), and the memory of the chunked
fused loss vs the naive full-logit loss at Qwen2.5's vocabulary (V = 151,936).

1. Step time: the embedded default model (SmolLM2-135M with LoRA, shared-weights teacher, demo FastConformer
   and adapter) on one fixed batch; α=0 skips the teacher forward. The two settings alternate within one run.
   Goal: α=1 ≤ 1.35 × α=0 (the teacher adds one forward pass).
2. Memory: the loss + backward for N positions of width H with V = 151,936, each variant in a fresh process;
   "extra" is peak RSS minus RSS before the loss. Measured with the output weight frozen (LoRA / adapter
   training, as in the demo) and trainable (full fine-tuning: both variants then hold a V×H weight gradient).
   Goal: chunked ≤ 1/8 of naive's extra memory.

    python benchmarks/distillation_cost.py --reps 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

V = 151_936


def step_times(reps: int, threads: int) -> dict[str, float]:
    import torch

    from nemo_salad.models.salad import SaladModel
    from nemo_salad.recipes.bench import compose_config, fixed_batch

    torch.set_num_threads(threads)
    model = SaladModel(compose_config("stage1", []).model).train()
    batch = fixed_batch(model)
    times: dict[str, list[float]] = {"alpha=1": [], "alpha=0": []}
    for rep in range(reps + 1):
        for name, alpha in (("alpha=1", 1.0), ("alpha=0", 0.0)):
            model.loss.alpha = alpha
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            model.compute_loss(batch).loss.backward()
            if rep:  # the first round is warm-up
                times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def loss_memory(variant: str, n: int, h: int, train_weight: bool) -> dict[str, float]:
    import torch

    from nemo_salad.losses import InterpolatedLoss, fused_distillation
    from nemo_salad.recipes.bench import peak_rss_mb

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    hs = torch.randn(n, h, generator=g, requires_grad=True)
    ws = (torch.randn(V, h, generator=g) * 0.02).requires_grad_(train_weight)
    ht, wt = torch.randn(n, h, generator=g), torch.randn(V, h, generator=g) * 0.02
    y = torch.randint(0, V, (n,), generator=g)
    before = peak_rss_mb()
    start = time.perf_counter()
    if variant == "naive":
        loss = InterpolatedLoss(alpha=1.0)(hs @ ws.T, ht @ wt.T, y)
    else:
        loss = fused_distillation(hs, ws, ht, wt, y, chunk_size=256).loss
    loss.backward()
    return {"extra_mb": peak_rss_mb() - before, "seconds": time.perf_counter() - start, "loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--positions", type=int, default=2048)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--memory", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory:
        variant, train_weight = args.memory[0], args.memory[1] == "1"
        print(json.dumps(loss_memory(variant, args.positions, args.hidden, train_weight)))
        return
    t = step_times(args.reps, args.threads)
    print(f"step time (threads={args.threads}, median of {args.reps}): alpha=1 {t['alpha=1']:.2f} s, "
          f"alpha=0 {t['alpha=0']:.2f} s, ratio {t['alpha=1'] / t['alpha=0']:.2f} (goal <= 1.35)")
    print(f"loss memory at V={V}, N={args.positions} positions, H={args.hidden}:")
    for train_weight in (False, True):
        res = {}
        for variant in ("naive", "chunked"):
            out = subprocess.run([sys.executable, __file__, "--memory", variant, str(int(train_weight)),
                                  "--positions", str(args.positions), "--hidden", str(args.hidden)],
                                 capture_output=True, text=True, check=True)
            res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        n, c = res["naive"], res["chunked"]
        assert abs(n["loss"] - c["loss"]) <= 1e-4 * max(1.0, abs(n["loss"])), (n, c)
        print(f"  output weight {'trainable' if train_weight else 'frozen   '}: naive extra {n['extra_mb']:.0f} MiB "
              f"({n['seconds']:.1f} s), chunked extra {c['extra_mb']:.0f} MiB ({c['seconds']:.1f} s), "
              f"ratio {c['extra_mb'] / n['extra_mb']:.3f} (goal <= 0.125)")


if __name__ == "__main__":
    main()
