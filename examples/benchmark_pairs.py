"""Write story pairs in the spoken StoryCloze manifest format from an offline benchmark with a context and endings.

StoryCloze itself is licensed and not shipped; HellaSwag (a context and four endings) has the same shape. This
writes, per item, the context with its right ending against the context with another ending, for the StoryCloze
protocol (``storycloze_spoken`` in ``conf/eval.yaml``, scored as slamkit scores sSC / tSC):

* ``--kind sSC`` — a wrong ending of the same item (drawn with ``--seed``);
* ``--kind tSC`` — the right ending of another item (a seeded cyclic permutation: never the item's own).

    python examples/benchmark_pairs.py hellaswag --kind sSC --n-items 100 --out hellaswag_ssc.jsonl
    python examples/salad_eval.py 'protocols=[]' 'storycloze_spoken={path: hellaswag_ssc.jsonl, kinds: [sSC]}' ...
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def write_pairs(benchmark: str, kind: str, n_items: int | None, seed: int, out: Path) -> int:
    """Write the manifest; returns the number of pairs."""
    from nemo_salad.evaluation.loaders import load_benchmark

    if kind not in ("sSC", "tSC"):
        raise ValueError(f"--kind {kind!r}; expected sSC or tSC")
    items = load_benchmark(benchmark, n_items=n_items, seed=seed).items
    if kind == "tSC" and len(items) < 2:
        raise ValueError(f"tSC pairs need at least 2 items; {benchmark} gave {len(items)}")
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    donor = {order[i]: order[(i + 1) % len(order)] for i in range(len(order))}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", encoding="utf-8") as f:
        for i, item in enumerate(items):
            context = " ".join(s.text for s in item.query).strip()
            right = item.options[item.gold].strip()
            if kind == "sSC":
                wrong = rng.choice([o for j, o in enumerate(item.options) if j != item.gold]).strip()
            else:
                other = items[donor[i]]
                wrong = other.options[other.gold].strip()
            f.write(json.dumps({"id": item.id, "context": {"text": context},
                                "correct": {"text": f"{context} {right}"},
                                "incorrect": {"text": f"{context} {wrong}"}}) + "\n")
    return len(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", help="an offline benchmark whose items are a context and endings (hellaswag)")
    parser.add_argument("--kind", default="sSC")
    parser.add_argument("--n-items", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    n = write_pairs(args.benchmark, args.kind, args.n_items, args.seed, args.out)
    print(f"{n} {args.kind} pairs from {args.benchmark} written to {args.out}")


if __name__ == "__main__":
    main()
