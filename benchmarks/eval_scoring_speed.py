"""Items/s of shared-context scoring vs per-option full forwards, SmolLM2-135M on CPU, real few-shot prompts.

    python benchmarks/eval_scoring_speed.py --threads 1 --items 24 --reps 3

Variants (same requests, interleaved in every repetition, median time reported):
  shared        one packed row per item (tree mask), several items per forward (batch_tokens=4096)
  shared-1      one packed row per item, one item per forward
  full-batched  one full forward per option, the options of an item padded into one batch (lm-eval style)
  full          one full forward per option, unbatched
All variants must agree on the log-likelihoods (max |diff| printed). Goal: shared >= 2x full-batched.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from nemo_salad.evaluation import load_benchmark
from nemo_salad.evaluation.prompts import (
    choose_shot_candidates,
    prompt_segments,
    shots_for,
    spoken_token_ids,
    text_token_ids,
)
from nemo_salad.evaluation.scoring import ScoreRequest, score_full_forward, score_shared_context
from nemo_salad.llm.smollm2 import load_smollm2


def requests(llm, tokenizer, name: str, n_items: int, shots: int) -> list[ScoreRequest]:
    bench = load_benchmark(name, n_items=n_items, seed=0)
    cands = choose_shot_candidates(bench.shot_pool, shots)
    device = next(llm.parameters()).device
    out = []
    for item in bench.items:
        ids = [t for seg, _ in prompt_segments(item, shots_for(item, cands, shots))
               for t in (spoken_token_ids if seg.spoken else text_token_ids)(tokenizer, seg.text)]
        with torch.no_grad():
            ctx = llm.embed(torch.tensor(ids, device=device)[None])[0]
        out.append(ScoreRequest(ctx, [text_token_ids(tokenizer, o) for o in item.options]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--items", type=int, default=24)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--benchmarks", nargs="+", default=["arc_easy", "hellaswag"])
    parser.add_argument("--shots", nargs="+", type=int, default=[0, 5])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    llm, tokenizer = load_smollm2()
    llm.eval()
    variants = {
        "shared": lambda r: score_shared_context(llm, r, batch_tokens=4096),
        "shared-1": lambda r: score_shared_context(llm, r, batch_tokens=1),
        "full-batched": lambda r: score_full_forward(llm, r, batch_options=True),
        "full": lambda r: score_full_forward(llm, r),
    }
    print(f"torch {torch.__version__}, threads {args.threads}, {args.items} items, {args.reps} reps (median)")
    print("| benchmark | shots | mean context tokens | options | " + " | ".join(f"{v} items/s" for v in variants)
          + " | shared / full-batched | shared / full | max abs diff |")
    print("|---|---|---|---|" + "---|" * (len(variants) + 3))
    for name in args.benchmarks:
        for shots in args.shots:
            reqs = requests(llm, tokenizer, name, args.items, shots)
            times: dict[str, list[float]] = {v: [] for v in variants}
            outs: dict[str, list[float]] = {}
            for _ in range(args.reps):
                for v, fn in variants.items():
                    start = time.perf_counter()
                    res = fn(reqs)
                    times[v].append(time.perf_counter() - start)
                    outs[v] = [x for item in res for x in item]
            rate = {v: len(reqs) / statistics.median(t) for v, t in times.items()}
            diff = max(abs(a - b) for v in variants for a, b in zip(outs[v], outs["full"], strict=True))
            ctx = statistics.mean(r.context.shape[0] for r in reqs)
            n_opt = statistics.mean(len(r.options) for r in reqs)
            print(f"| {name} | {shots} | {ctx:.0f} | {n_opt:.1f} | " + " | ".join(f"{rate[v]:.2f}" for v in variants)
                  + f" | {rate['shared'] / rate['full-batched']:.2f} | {rate['shared'] / rate['full']:.2f} "
                  f"| {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
