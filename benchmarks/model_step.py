"""CPU training-step time of the embedded default SALAD model and the memory the shared-weights teacher saves.

Model: SmolLM2-135M student + teacher, the demo FastConformer (4 layers, width 144) and the 2-layer causal
adapter, on a fixed batch of 4 samples ``[text, 3 s speech, text]``. One step = speech into the input slots,
student forward, teacher forward (no grad), fused distillation loss, backward, AdamW update. Two teacher modes, each
measured in its own process so their memory does not mix:

* ``copy``   — a separate frozen teacher LLM, student LLM fully fine-tuned (the paper's setting);
* ``shared`` — student LLM with LoRA (rank 8), teacher = the same weights with LoRA off (the demo default).

    python benchmarks/model_step.py --reps 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys


def measure(mode: str, reps: int, threads: int) -> dict:
    import torch

    from nemo_salad.models.salad import SaladModel
    from nemo_salad.recipes.bench import compose_config, fixed_batch, median_time, peak_rss_mb

    torch.set_num_threads(threads)
    overrides = ["model/teacher=copy", "model.llm.lora=null"] if mode == "copy" else []
    cfg = compose_config("stage1", overrides)
    rss_before = peak_rss_mb()
    model = SaladModel(cfg.model).train()
    from nemo_salad.parts.optim import param_groups

    optimizer = torch.optim.AdamW(param_groups(model, dict(cfg.model.optim)))
    batch = fixed_batch(model)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.compute_loss(batch).loss.backward()
        optimizer.step()

    seconds = median_time(step, reps)
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"mode": mode, "step_s": seconds, "param_mb": params / 2**20, "trainable_params": trainable,
            "peak_rss_mb": peak_rss_mb(), "rss_before_model_mb": rss_before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mode", choices=["copy", "shared"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.reps, args.threads)))
        return
    rows = {}
    for mode in ("copy", "shared"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--reps", str(args.reps), "--threads",
                              str(args.threads)], capture_output=True, text=True, check=True)
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"threads={args.threads} reps={args.reps} (median step time)")
    print(f"{'teacher':>8} {'step s':>8} {'params MiB':>11} {'trainable':>11} {'peak RSS MiB':>13}")
    for mode, r in rows.items():
        print(f"{mode:>8} {r['step_s']:>8.2f} {r['param_mb']:>11.0f} {r['trainable_params']:>11,} "
              f"{r['peak_rss_mb']:>13.0f}")
    c, s = rows["copy"], rows["shared"]
    print(f"shared vs copy: parameter memory saved {c['param_mb'] - s['param_mb']:.0f} MiB "
          f"({1 - s['param_mb'] / c['param_mb']:.0%}); peak RSS saved {c['peak_rss_mb'] - s['peak_rss_mb']:.0f} MiB "
          f"({1 - s['peak_rss_mb'] / c['peak_rss_mb']:.0%}); "
          f"step time ratio shared/copy {s['step_s'] / c['step_s']:.2f}")


if __name__ == "__main__":
    main()
