"""What a nightly scoring commit costs as the scored library grows (run by hand).

    python benchmarks/commit_cost.py [--tracks 20000 200000] [--labels 10] [--nightly 1000]

For each size N, a store's score table of one model version is filled with N tracks' rankings
(``--labels`` rows a track, as scoring writes them), then one night's run is committed on top:
``--nightly`` new tracks plus as many rescored ones (changed audio). Prints, for that commit:
its wall time and peak memory above the process's baseline (the kernel's high-water mark; the
median of ``--repeats`` commits, each in a fresh process, and the range of times); the same for
the commit done with pandas merges and sort (the obvious alternative) and the ratio; the file's
size; and beside them the time of the question the file's sort order serves (the 20 best
tracks for one label), of reading the whole table once, and of finding which tracks have scores
(as every scoring run does first) from their rank-1 rows and, the alternative, from every row.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from measuring import PeakRss, together

from featurestore.parquet_files import parquet_bytes
from featurestore.store import Store
from featurestore.urls import atomic_write
from scoring.score_tables import (KEY, RANKING_SCHEMA, ROW_GROUP_ROWS, ScoreTable,
                                  VersionInfo)

LABELS = ["Action", "Adventure", "Comedy", "Crime", "Drama", "Horror", "Romance", "Sci-Fi",
          "Thriller", "Western", "Fantasy", "Mystery", "War", "Music", "Family", "History"]


def batch_frames(track_ids: np.ndarray, hashes: np.ndarray, labels: list[str], run_id: str,
                 rng) -> tuple:
    """One scoring task's rankings and tile scores for tracks ``track_ids`` with content
    ``hashes`` (2 tiles each)."""
    n, k = len(track_ids), len(labels)
    scores = rng.random((n, k), dtype=np.float32)
    ranks = (-scores).argsort(1).argsort(1) + 1
    rankings = pd.DataFrame({
        "catalog": "library", "track_id": np.repeat(track_ids, k),
        "label": np.tile(np.array(labels, dtype=object), n), "score": scores.ravel(),
        "rank": ranks.ravel().astype(np.int32), "n_tiles": np.int32(2),
        "content_hash": np.repeat(hashes, k),
        "model": "bench", "version": "v1", "feature_set": "f1", "aggregate": "mean",
        "cross_fitted": False, "run_id": run_id, "scored_at": pd.Timestamp.now(tz="UTC")})
    tiles = pd.DataFrame({
        "catalog": "library", "track_id": np.repeat(track_ids, 2),
        "offset": np.tile(np.array([0, 1], dtype=np.int32), n),
        "tile": np.arange(2 * n, dtype=np.int64), "scores": list(rng.random((2 * n, k),
                                                                         dtype=np.float32)),
        "run_id": run_id})
    return rankings, tiles


def stage(table: ScoreTable, ids: np.ndarray, labels: list[str], run_id: str, rng,
          per_batch: int = 2000) -> list[str]:
    """Stage the scores of tracks numbered ``ids`` in batches of ``per_batch``."""
    for b, start in enumerate(range(0, len(ids), per_batch)):
        part = ids[start:start + per_batch]
        table.write_batch(run_id, b, *batch_frames(
            np.array([f"t{i:07d}" for i in part], dtype=object),
            np.array([f"{i:032x}" for i in part], dtype=object), labels, run_id, rng))
    return [table.staged_path(run_id, b) for b in range(-(-len(ids) // per_batch))]


def pandas_commit(table: ScoreTable, staged: list[str]) -> None:
    """The obvious alternative: the same commit with pandas merges and sort."""
    new = table.read_staged(staged)
    old = table.rankings()
    replaced = new[KEY].drop_duplicates().assign(_new=True)
    old = old.merge(replaced, on=KEY, how="left")
    new = new.drop_duplicates([*KEY, "label"], keep="last")
    frame = pd.concat([old[old["_new"].isna()].drop(columns="_new"), new], ignore_index=True)
    frame = frame.sort_values(["label", "score", "catalog", "track_id"],
                              ascending=[True, False, True, True], kind="stable")
    seq = table.seq()
    atomic_write(table.fs, table.rankings_path,
                 parquet_bytes(frame, RANKING_SCHEMA, {b"featurestore.seq": str(seq + 1).encode()},
                               ROW_GROUP_ROWS))


def timed_commit(url: str, staged: list[str], way: str) -> tuple[float, float]:
    """(seconds, peak MiB above the baseline) of committing ``staged``, in this process."""
    table = ScoreTable(Store(url), "bench", "v1")
    with PeakRss() as peak:
        start = time.perf_counter()
        if way == "arrow":
            table.commit(staged, keep=None, replace=False)
        else:
            pandas_commit(table, staged)
        seconds = time.perf_counter() - start
    return seconds, peak.above_base / 2**20


def measure(n: int, labels: list[str], nightly: int, root: str, repeats: int) -> None:
    rng = np.random.default_rng(n)
    url = os.path.join(root, f"store-{n}")
    shutil.rmtree(url, ignore_errors=True)
    store = Store(url)
    store.initialize()
    table = ScoreTable(store, "bench", "v1")
    table.write_info(VersionInfo("bench", "v1", "f1", tuple(labels), "mean", "ensemble"))
    start = time.perf_counter()
    table.commit(stage(table, np.arange(n), labels, "run-0", rng), keep=None, replace=False)
    table.clean()
    first = time.perf_counter() - start
    size = os.path.getsize(table.rankings_path) / 2**20

    # One night: `nightly` new tracks and `nightly` changed ones rescored, committed in a fresh
    # process each way, so that memory held over from filling the table does not count.
    ids = np.concatenate([np.arange(n, n + nightly), rng.choice(n, nightly, replace=False)])
    runs: dict[str, list[tuple[float, float]]] = {"arrow": [], "pandas": []}
    for rep in range(repeats):
        for way in runs:
            staged = stage(table, ids, labels, f"run-{way}-{rep}", rng)
            runs[way].append(together(timed_commit, [(url, staged, way)])[0])
            table.clean()
    (commit, peak), (alternative, alt_peak) = (np.median(runs[w], axis=0) for w in runs)
    spread = {w: f"{min(r)[0]:.2f}-{max(r)[0]:.2f} s" for w, r in runs.items()}
    assert table.seq() == 1 + 2 * repeats
    assert len(table.rankings(["track_id"])) == (n + nightly) * len(labels)

    t = time.perf_counter()
    table.rankings(["catalog", "track_id", "score"], where=pc.field("label") == labels[0]).head(20)
    best = time.perf_counter() - t
    t = time.perf_counter()
    table.rankings()
    whole = time.perf_counter() - t
    t = time.perf_counter()
    table.tracks([*KEY, "content_hash"])  # what every scoring run reads first
    scored = time.perf_counter() - t
    t = time.perf_counter()
    table.rankings([*KEY, "content_hash"]).drop_duplicates(KEY)  # the same from every row
    scored_all = time.perf_counter() - t
    rows = (n + nightly) * len(labels)
    print(f"{n:>8,} tracks ({rows:,} rows, {size:.1f} MiB): filled in {first:.1f} s; "
          f"nightly commit of {2 * nightly:,} tracks {commit:.2f} s ({spread['arrow']}), "
          f"peak +{peak:.0f} MiB; the same in pandas {alternative:.2f} s ({spread['pandas']}), "
          f"+{alt_peak:.0f} MiB: {alternative / commit:.1f}x the time; "
          f"best 20 for a label {best * 1000:.0f} ms, whole table read {whole:.2f} s; "
          f"the scored tracks from rank-1 rows {scored * 1000:.0f} ms (from every row "
          f"{scored_all * 1000:.0f} ms)",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, nargs="+", default=[20_000, 200_000])
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--nightly", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3, help="commits timed each way")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    args = parser.parse_args()
    root = args.dir or tempfile.mkdtemp(prefix="commit-cost-")
    for n in args.tracks:
        measure(n, LABELS[:args.labels], args.nightly, root, args.repeats)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
