"""CPU speed of the Megatron SmolLM2-135M against the same weights in ``transformers``.

Measures forward (no grad) and forward+backward (loss = mean log-softmax at every position) on random
token batches of 1×128 and 4×128, for the Megatron model with SDPA attention, with megatron-core's local
attention, and for ``transformers``' ``LlamaForCausalLM``. The repetitions of all models are interleaved
(A, B, C, A, B, C, ...) so that load from other processes on shared cores hits them alike; the medians and
their ratios (Megatron / transformers, goal ≤ 1.2) come from this one run.

    python benchmarks/llm_cpu_speed.py --threads 1 --reps 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--shapes", default="1x128,4x128")
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    import torch
    from transformers import AutoModelForCausalLM

    from nemo_salad.llm.hf_convert import load_hf
    from nemo_salad.llm.smollm2 import smollm2_hf_dir

    torch.set_num_threads(args.threads)
    path = smollm2_hf_dir()
    models = {
        "megatron-sdpa": load_hf(path, attention="sdpa"),
        "megatron-local": load_hf(path, attention="local"),
        "transformers": AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval(),
    }

    def run(name: str, ids: torch.Tensor, backward: bool) -> float:
        model = models[name]
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with torch.set_grad_enabled(backward):
            logits = model(ids).logits if name == "transformers" else model(input_ids=ids)
            if backward:
                logits.log_softmax(-1).mean().backward()
        return time.perf_counter() - start

    print(f"torch {torch.__version__}, threads={args.threads}, reps={args.reps} (median seconds)")
    print(f"{'shape':>6} {'mode':>8} " + " ".join(f"{n:>15}" for n in models) + "   megatron-sdpa/transformers")
    for shape in args.shapes.split(","):
        b, t = (int(x) for x in shape.split("x"))
        ids = torch.randint(0, 49152, (b, t), generator=torch.Generator().manual_seed(0))
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            times: dict[str, list[float]] = {n: [] for n in models}
            for name in models:  # warm-up
                run(name, ids, backward)
            for _ in range(args.reps):
                for name in models:
                    times[name].append(run(name, ids, backward))
            med = {n: statistics.median(v) for n, v in times.items()}
            ratio = med["megatron-sdpa"] / med["transformers"]
            print(f"{shape:>6} {mode:>8} " + " ".join(f"{med[n]:>15.3f}" for n in models) + f"   {ratio:.2f}")


if __name__ == "__main__":
    main()
