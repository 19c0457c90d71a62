"""CPU speed of Stage II active selection: sentence-embedding throughput and balanced k-means on 100k texts.

* Embedding: the offline all-MiniLM-L6-v2 (sentence-transformers) on ``--texts`` real passages of the offline
  corpus (``nemo_salad.data.offline_text_corpus``), in resumable 2048-text chunks written to a memory map — the
  same path as a selection round — and the model-free hashing encoder on the same texts. Throughput is texts/s;
  the time for 100k texts is extrapolated from it (linear in the number of texts: fixed-size batches).
* Clustering: 100k × 384 embeddings made by tiling the real MiniLM embeddings with small Gaussian noise
  (re-normalised), K = 128: plain faiss k-means (20 iterations, faiss' 256-points-per-centroid subsample) and
  the full balanced k-means (that k-means + 3 balanced re-assignment rounds over all points), repeated and
  interleaved; medians, their ratio, and the resulting size range against the stated bound.

    OMP_NUM_THREADS=2 python benchmarks/selection_speed.py --texts 5000 --threads 2 --reps 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=5000, help="real passages to embed")
    parser.add_argument("--n", type=int, default=100_000, help="points to cluster")
    parser.add_argument("--k", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    os.environ["HF_HUB_OFFLINE"] = "1"

    import faiss
    import numpy as np
    import torch

    from nemo_salad.data.text_corpus import offline_text_corpus
    from nemo_salad.selection import HashingEncoder, SentenceTransformerEncoder, balanced_kmeans, embed_texts
    from nemo_salad.selection.cluster import size_bounds

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    texts = [d.text for d in offline_text_corpus(limit=args.texts, seed=0)]
    words = sum(len(t.split()) for t in texts) / len(texts)
    print(f"threads={args.threads}  texts={len(texts)} (mean {words:.1f} words)  torch {torch.__version__}  "
          f"faiss {faiss.__version__}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, encoder in (("all-MiniLM-L6-v2", SentenceTransformerEncoder(batch_size=64)),
                              ("hashing-384", HashingEncoder(384))):
            start = time.perf_counter()
            emb = embed_texts(texts, encoder, os.path.join(tmp, name), chunk_size=2048)
            seconds = time.perf_counter() - start
            rows.append((name, len(texts) / seconds, seconds))
            if name == "all-MiniLM-L6-v2":
                minilm = np.asarray(emb, np.float32)
    print("\n| encoder | texts | seconds | texts/s | extrapolated s per 100k texts |\n|---|---|---|---|---|")
    for name, rate, seconds in rows:
        print(f"| {name} | {len(texts)} | {seconds:.1f} | {rate:.1f} | {100_000 / rate:.0f} |")

    rng = np.random.default_rng(0)
    x = minilm[rng.integers(0, len(minilm), size=args.n)] + 0.02 * rng.normal(size=(args.n, minilm.shape[1]))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    times: dict[str, list[float]] = {"faiss k-means": [], "balanced k-means": []}
    sizes = None
    for rep in range(args.reps):  # interleaved so that load from other jobs hits both alike
        start = time.perf_counter()
        km = faiss.Kmeans(x.shape[1], args.k, niter=20, seed=rep, spherical=True, verbose=False)
        km.train(x)
        km.index.search(x, 1)
        times["faiss k-means"].append(time.perf_counter() - start)
        start = time.perf_counter()
        result = balanced_kmeans(x, args.k, seed=rep, slack=0.05)
        times["balanced k-means"].append(time.perf_counter() - start)
        sizes = result.sizes
    lower, upper = size_bounds(args.n, args.k, 0.05)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n| clustering {args.n} x {x.shape[1]}, K={args.k} | median s ({args.reps} reps) | all reps s |\n"
          "|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {med[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    print(f"\nratio balanced / plain faiss: {med['balanced k-means'] / med['faiss k-means']:.2f}")
    print(f"balanced cluster sizes {sizes.min()}..{sizes.max()} (bound {lower}..{upper}, N/K = {args.n / args.k:.1f})")


if __name__ == "__main__":
    main()
