"""How fast exact similarity search answers over a large library of track embeddings (run by
hand).

    python benchmarks/similarity_search.py [--tracks 1000000] [--size 128] [--threads 2]

Generates ``--tracks`` random embeddings of ``--size`` float32 values, builds
:class:`scoring.similarity.ExactIndex` over them, and times single queries (the ``--top`` 20
nearest by cosine, the median of ``--queries``), with the extra memory a query allocates
(tracemalloc) and the index's own size. Beside it, the obvious alternative: scikit-learn's
``NearestNeighbors(metric="cosine", algorithm="brute")`` on the same vectors and threads, its
time per query, the ratio, and whether both found the same tracks. With ``--load`` it also
writes the vectors as a version's ``embeddings.parquet`` and times reading them back into a
matrix, which ``featurestore similar`` does once per command.
"""

from __future__ import annotations

import argparse
import os
import sys

# BLAS threads are fixed when numpy loads: set them before
_threads = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "2")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _threads

import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import psutil  # noqa: E402

from scoring.similarity import ExactIndex  # noqa: E402


def _timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tracks", type=int, default=1_000_000)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--alternative-queries", type=int, default=3)
    p.add_argument("--load", action="store_true", help="also time reading embeddings.parquet")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    vectors = np.empty((args.tracks, args.size), np.float32)
    for start in range(0, args.tracks, 100_000):  # bounded temporaries
        vectors[start:start + 100_000] = rng.standard_normal(
            (min(100_000, args.tracks - start), args.size), dtype=np.float32)
    queries = rng.standard_normal((args.queries, args.size), dtype=np.float32)
    rss0 = psutil.Process().memory_info().rss

    start = time.perf_counter()
    index = ExactIndex(vectors)
    build_s = time.perf_counter() - start
    index.search(queries[0], args.top)  # warm up
    times = []
    tracemalloc.start()
    for q in queries:
        t = time.perf_counter()
        _, ours = index.search(q, args.top)
        times.append(time.perf_counter() - t)
    _, query_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ours_s = statistics.median(times)
    index_mib = index.vectors.nbytes / 2 ** 20
    print(f"{args.tracks:,} embeddings of {args.size} float32, {args.threads} threads")
    print(f"  ExactIndex: built in {build_s:.2f} s, {index_mib:.0f} MiB of unit vectors "
          f"(RSS +{(psutil.Process().memory_info().rss - rss0) / 2 ** 20:.0f} MiB); "
          f"one query (top {args.top}) {ours_s * 1000:.0f} ms median "
          f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f}), "
          f"{query_peak / 2 ** 20:.1f} MiB allocated by a query at most")

    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=args.top, metric="cosine", algorithm="brute",
                          n_jobs=args.threads).fit(vectors)
    alt_s, (_, theirs) = _timed(lambda: nn.kneighbors(queries[-1:]), args.alternative_queries)
    same = set(theirs[0]) == set(ours[0])
    print(f"  scikit-learn NearestNeighbors(brute, cosine): one query {alt_s * 1000:.0f} ms "
          f"median of {args.alternative_queries}; ExactIndex is {alt_s / ours_s:.1f}x faster; "
          f"same {args.top} tracks: {same}")

    naive_s, naive = _timed(lambda: pd.Series(
        pd.DataFrame(vectors).dot(queries[-1]) / np.linalg.norm(vectors, axis=1)).nlargest(
        args.top).index.to_numpy(), 1)
    print(f"  pandas (DataFrame.dot, divide by norms, nlargest): one query {naive_s * 1000:.0f} "
          f"ms; ExactIndex is {naive_s / ours_s:.1f}x faster; same tracks: "
          f"{set(naive) == set(ours[0])}")

    if args.load:
        from featurestore.store import Store
        from scoring.embedding_files import commit_embeddings, embedding_bytes, read_embeddings

        with tempfile.TemporaryDirectory() as tmp:
            store = Store(tmp)
            keys = pd.DataFrame({"catalog": "lib", "track_id": [f"t{i:07d}" for i in
                                                                range(args.tracks)],
                                 "content_hash": "0" * 32, "n_tiles": 20})
            lineage = {"model": "m", "version": "v", "feature_set": "f", "run_id": "r",
                       "scored_at": pd.Timestamp.now(tz="UTC")}
            staged = os.path.join(tmp, "staged.parquet")
            with open(staged, "wb") as f:
                f.write(embedding_bytes(keys, vectors, lineage))
            path = os.path.join(tmp, "embeddings.parquet")
            commit_embeddings(store.fs, path, [staged], None, False, 1)
            load_s, _ = _timed(lambda: read_embeddings(store.fs, path, ["catalog", "track_id"]),
                               3)
            print(f"  embeddings.parquet: {os.path.getsize(path) / 2 ** 20:.0f} MiB, read into "
                  f"a matrix with the keys in {load_s:.2f} s (median of 3)")


if __name__ == "__main__":
    main()
