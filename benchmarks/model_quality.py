"""Model quality on the demo library: track-level LRAP of each architecture against a
scikit-learn baseline, on the same split, in the same run (run by hand).

    python benchmarks/model_quality.py [--tracks 240] [--epochs 15] [--dir benchmarks/out/quality]

Generates and builds the demo library, trains ``dnn``, ``cnn``, ``ensemble`` and ``multilabel``
with the same seed and class selection (so the same track split, checked), scores every track
and evaluates the test side with ``scoring.evaluate``. The baseline is a one-vs-rest
``LogisticRegression`` on each track's per-coefficient MFCC mean and standard deviation over its
tiles (80 values at the study's spec), standardized, fitted on the same training tracks and
ranked on the same test tracks with ``label_ranking_average_precision_score``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import label_ranking_average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featurestore
from catalogs.demo import generate_demo_library
from featurestore.cluster import connect
from scoring import evaluate, score
from scoring.score_tables import KEY
from training import TrainConfig, train
from training.model_files import ModelFiles
from training.targets import multi_hot

ARCHS = ("dnn", "cnn", "ensemble", "multilabel")


def track_summaries(store, tracks: pd.DataFrame) -> np.ndarray:
    """Per track: MFCC mean and standard deviation over its tiles' frames, per coefficient."""
    tiles = store.tiles(tracks).compute()
    index = pd.MultiIndex.from_arrays([tiles["catalog"].values, tiles["track_id"].values])
    wanted = pd.MultiIndex.from_frame(tracks[KEY])
    rows = []
    for key in wanted:
        frames = tiles.values[index == key]  # (tiles, coefficients, frames)
        flat = frames.transpose(1, 0, 2).reshape(frames.shape[1], -1)
        rows.append(np.concatenate([flat.mean(axis=1), flat.std(axis=1)]))
    return np.asarray(rows, dtype=np.float64)


def baseline_lrap(url: str, model: str) -> float:
    """LogisticRegression on track summaries, on ``model``'s own split and classes."""
    store = featurestore.open(url)
    files = ModelFiles(store, model)
    config = files.read_complete_config()
    classes = list(config["classes"])
    sides = files.read_frame("split.parquet")
    tracks = store.tracks(status="ok")
    data = sides.merge(tracks, on=KEY)
    train_side, test_side = data[data["side"] == "train"], data[data["side"] == "test"]
    x_train, x_test = track_summaries(store, train_side), track_summaries(store, test_side)
    y_train = multi_hot(train_side, classes, config["label_column"])
    y_test = multi_hot(test_side, classes, config["label_column"])
    clf = make_pipeline(StandardScaler(),
                        OneVsRestClassifier(LogisticRegression(max_iter=2000)))
    clf.fit(x_train, y_train)
    return float(label_ranking_average_precision_score(y_test, clf.predict_proba(x_test)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=240)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "out",
                                                      "quality"))
    args = parser.parse_args()
    catalog = generate_demo_library(os.path.join(args.dir, "lib"), n_tracks=args.tracks)
    url = os.path.join(args.dir, "store")
    results = {}
    with connect(n_workers=2) as client:
        featurestore.build(catalog, url, name="demo", client=client, progress=False)
        splits, names = [], []
        for arch in ARCHS:
            name = f"q-{arch}-{args.epochs}-{args.seed}"
            start = time.perf_counter()
            if not ModelFiles(featurestore.open(url), name).exists():
                train(url, name, TrainConfig(arch=arch, epochs=args.epochs, optimizer="adam",
                                             learning_rate=1e-3, min_tracks=6, seed=args.seed,
                                             device="cpu"), progress=False)
            trained_s = time.perf_counter() - start
            score(url, name, client=client, progress=False)
            ev = evaluate(url, name, split="test")
            results[arch] = (ev.track["lrap"], ev.tile["lrap"], trained_s, ev.track["samples"])
            names.append(name)
            splits.append(ModelFiles(featurestore.open(url), name).read_frame("split.parquet")
                          .sort_values(KEY).reset_index(drop=True))
    same = all(s.equals(splits[0]) for s in splits)
    base = baseline_lrap(url, names[0])
    print(f"demo library: {args.tracks} tracks, {args.epochs} epochs, seed {args.seed}; "
          f"one split for every model: {same}; {results['dnn'][3]} test tracks")
    print("| model | track LRAP | tile LRAP | vs LogisticRegression | training s |")
    print("|---|---|---|---|---|")
    for arch, (track, tile, seconds, _) in results.items():
        print(f"| {arch} | {track:.3f} | {tile:.3f} | {track / base:.2f}x | {seconds:.0f} |")
    print(f"| LogisticRegression (MFCC mean+std per track) | {base:.3f} | | 1.00x | |")


if __name__ == "__main__":
    main()
