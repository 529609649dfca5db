"""A nightly scoring run with nothing new, over a large scored library (run by hand).

    python benchmarks/scoring_throughput.py        # first: it trains the model used here
    python benchmarks/nightly_noop.py [--tracks 200000]

Makes a store of ``--tracks`` film cues with a build manifest (97% ok, 3% failed; metadata
only, as ``query_pushdown.py`` makes it), copies in the ensemble that ``scoring_throughput.py``
trained (same feature spec), commits rankings for every ok track, then times ``score`` on it:
every track already has a current score, so the run plans, finds nothing to do, reports the
failed tracks it skips, and commits nothing. That is the cost every night pays before any work.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time

import numpy as np
from commit_cost import batch_frames
from query_pushdown import make_store
from scoring_throughput import MODEL

import featurestore
from scoring import score
from scoring.score_tables import KEY, ScoreTable, VersionInfo
from training.model_files import ModelFiles


def scored_store(url: str, n: int, model_dir: str) -> None:
    """The store of ``n`` tracks with the model and a committed score for every ok track."""
    make_store(url, n)
    shutil.copytree(model_dir, os.path.join(url, "models", MODEL))
    store = featurestore.open(url)
    files = ModelFiles(store, MODEL)
    config = files.read_complete_config()
    table = ScoreTable(store, MODEL, files.version())
    classes = list(config["classes"])
    table.write_info(VersionInfo(MODEL, files.version(), config["feature_set"], tuple(classes),
                                 "mean", config["arch"]))
    tracks = store.tracks(status="ok", columns=["content_hash"])
    rng, staged, per = np.random.default_rng(0), [], 5000
    for b, start in enumerate(range(0, len(tracks), per)):
        part = tracks.iloc[start:start + per]
        table.write_batch("fill", b, *batch_frames(part["track_id"].to_numpy(object),
                                                   part["content_hash"].to_numpy(object),
                                                   classes, "fill", rng))
        staged.append(table.staged_path("fill", b))
    table.commit(staged, keep=tracks[KEY], replace=False)
    table.clean()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=200_000)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--model-store", default=os.path.join(os.path.dirname(__file__), "out",
                                                              "scoring", "store"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_dir = os.path.join(args.model_store, "models", MODEL)
    if not os.path.isdir(model_dir):
        raise SystemExit(f"no trained {MODEL} in {args.model_store}: run "
                         "benchmarks/scoring_throughput.py first")
    url = os.path.join(args.out, f"nightly-store-{args.tracks}")
    shutil.rmtree(url, ignore_errors=True)
    start = time.perf_counter()
    scored_store(url, args.tracks, model_dir)
    print(f"store of {args.tracks:,} tracks, every ok track scored: made in "
          f"{time.perf_counter() - start:.0f} s")
    for _ in range(args.repeats):
        start = time.perf_counter()
        report = score(url, MODEL, progress=False, log=lambda msg: None)
        wall = time.perf_counter() - start
        assert report.scored == 0 and report.commit == 0
        print(f"nightly score with nothing new: {wall:.2f} s ({report.up_to_date:,} up to date, "
              f"{len(report.skipped):,} skipped as failed builds)")


if __name__ == "__main__":
    main()
