"""Model quality over cross-validation folds: every architecture and the logistic baseline on
the same folds, by track and grouped by film (run by hand).

    python benchmarks/model_quality.py --catalog PATH [--folds 5] [--archs linear,kernel,pooled]
    python benchmarks/model_quality.py                # the demo library (240 cues)
    python benchmarks/model_quality.py --store S --archs "ensemble@batch_size=128,ensemble"

An architecture may carry settings of its own after ``@`` (``+`` between them), so that two
variants of one model run on the same folds: ``ensemble@batch_size=128+learning_rate=0.01``.

Builds the catalog's store (or reuses ``--store``), cuts the usable tracks into ``--folds`` folds
(by track; with ``--by film`` whole films, so every test film is unseen), and for each fold trains
each architecture with ``featurestore``'s own ``train`` on the other folds (a seeded fifth of them
for validation) and measures track LRAP and coverage error on the fold. The baseline is the
ten-line one: scikit-learn's ``LogisticRegression`` (defaults, one-vs-rest) on each track's
MFCC mean and standard deviation per coefficient, standardized, fitted on the same training and
validation tracks. Prints per-fold figures, then mean and spread per model.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import coverage_error, label_ranking_average_precision_score
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import featurestore
from catalogs.demo import generate_demo_library
from featurestore.statuses import OK
from featurestore.tile_arrays import TileSource, read_tiles, tile_rows
from training import TrainConfig, train
from training.config import STATISTICS_MODELS
from training.linear import statistics_of
from training.selection import folds_of, inner_split
from training.targets import multi_hot, select_classes


def baseline(x: np.ndarray, y: np.ndarray, fit: np.ndarray, test: np.ndarray) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(max_iter=2000)))
    return clf.fit(x[fit], y[fit]).predict_proba(x[test])


def labelled_tracks(store, fset, min_tracks: int) -> tuple[pd.DataFrame, np.ndarray, list]:
    """The feature set's built tracks that carry a genre of at least ``min_tracks`` tracks,
    their multi-hot labels, and those genres."""
    tracks = store.tracks(feature_set=fset.hash, status=OK)
    classes = select_classes(tracks, "genres", (), min_tracks)
    y = multi_hot(tracks, classes)
    keep = y.sum(1) > 0
    return tracks[keep].reset_index(drop=True), y[keep], classes


def read_track_tiles(fset, tracks: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(counts, tiles)``: the tiles of ``tracks`` (rows of ``fset``'s build, with
    ``n_tiles`` and ``tile_start``), track after track."""
    counts = tracks["n_tiles"].to_numpy(np.int64)
    return counts, read_tiles(TileSource(fset.tiles_url, fset.store.storage_options),
                              tile_rows(tracks["tile_start"].to_numpy(np.int64), counts)[0])


def statistics_benchmark(description: str, repeats: int) -> argparse.ArgumentParser:
    """The options of the scripts that refit the statistics models on a store's labelled
    tracks (``label_combination.py``, ``library_rankings.py``); :func:`load_labelled` reads
    what they name."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--store", required=True)
    parser.add_argument("--feature-set", help="hash or kind (default: the store's default)")
    parser.add_argument("--archs", default="kernel,linear")
    parser.add_argument("--repeats", type=int, default=repeats)
    parser.add_argument("--seed", type=int, default=0, help="first reshuffle's seed")
    parser.add_argument("--min-tracks", type=int, default=20, help="tracks a label needs")
    return parser


def load_labelled(args: argparse.Namespace):
    """``(feature set, tracks, targets, classes, tile counts, tiles)`` of the labelled tracks
    of :func:`statistics_benchmark`'s store, printed in one line."""
    warnings.filterwarnings("ignore", category=UserWarning)
    fset = featurestore.open(args.store).feature_set(args.feature_set)
    tracks, y, classes = labelled_tracks(featurestore.open(args.store), fset, args.min_tracks)
    counts, tiles = read_track_tiles(fset, tracks)
    print(f"feature set {fset.hash} ({fset.spec.kind}): {len(tracks)} tracks, labels "
          f"{', '.join(classes)}")
    return fset, tracks, y, classes, counts, tiles


def mfcc_statistics(store, tracks: pd.DataFrame) -> np.ndarray:
    """The baseline's input: each track's MFCC mean and std per coefficient (the study's
    feature set, whichever set the models train on)."""
    mfcc = store.feature_set(featurestore.FeatureSpec())
    rows = tracks[["catalog", "track_id"]].merge(
        store.tracks(feature_set=mfcc.hash, status=OK), on=["catalog", "track_id"])
    counts, tiles = read_track_tiles(mfcc, rows)
    return statistics_of(tiles, counts)


def variant(text: str) -> tuple[str, dict]:
    """``arch@key=value+key=value`` as (arch, settings), values as int, float or text."""
    arch, _, rest = text.partition("@")
    settings = {}
    for item in filter(None, rest.split("+")):
        key, _, value = item.partition("=")
        for kind in (int, float, str):
            try:
                settings[key] = kind(value)
                break
            except ValueError:
                continue
    return arch, settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", help="a catalog file (default: the demo library)")
    parser.add_argument("--store", help="a store already built from it")
    parser.add_argument("--tracks", type=int, default=240, help="demo library size")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--by", default="track", help="track, or a column such as film")
    parser.add_argument("--archs", default="linear,kernel,pooled,auto")
    parser.add_argument("--min-tracks", type=int, default=20)
    parser.add_argument("--feature-set", help="feature set hash (default: the store's MFCC)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, help="epochs of the trained networks")
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "out",
                                                      "quality"))
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    url = args.store or os.path.join(args.dir, "store")
    if not args.store:
        catalog = args.catalog or generate_demo_library(os.path.join(args.dir, "lib"),
                                                        n_tracks=args.tracks)
        featurestore.build(catalog, url, progress=False)
    store = featurestore.open(url)
    fset = store.feature_set(args.feature_set)
    tracks, y, classes = labelled_tracks(store, fset, args.min_tracks)
    x = mfcc_statistics(store, tracks)
    groups = None if args.by == "track" else tracks[args.by].astype(str).to_numpy()
    folds = folds_of(np.arange(len(tracks)), groups, args.folds, args.seed)
    archs = [a for a in args.archs.split(",") if a]
    print(f"{len(tracks)} tracks, {len(classes)} classes ({', '.join(classes)}), "
          f"{args.folds} folds by {args.by}, feature set {fset.hash} ({fset.spec.kind}); "
          f"chance LRAP {label_ranking_average_precision_score(y, np.random.default_rng(0).random(y.shape)):.3f}")
    rows = []
    for k, (fit, test) in enumerate(folds):
        # by track: a few films left for validation would miss classes, which train refuses
        tr, va = inner_split(fit, 0.2, args.seed + k)
        side = np.full(len(tracks), "test", dtype=object)
        side[tr], side[va] = "train", "val"
        split = tracks[["catalog", "track_id"]].assign(side=side)
        p = baseline(x, y, fit, test)
        rows.append({"fold": k, "model": "logistic baseline", "lrap":
                     label_ranking_average_precision_score(y[test], p),
                     "coverage": coverage_error(y[test], p), "seconds": 0.0})
        for j, name in enumerate(archs):
            arch, settings = variant(name)
            # --epochs is the networks': a statistics model refuses a setting it has no use for
            epochs = {} if arch in STATISTICS_MODELS else {"epochs": args.epochs}
            # by film: the models' own inner validation holds out whole films too
            by = {} if groups is None else {"group_by": args.by}
            config = TrainConfig(**{"arch": arch, "labels": tuple(classes), "seed": args.seed,
                                    "feature_set": fset.hash, **epochs, **by, **settings})
            started = time.perf_counter()
            report = train(store, f"q-{arch}-{j}-{k}", config, split=split, overwrite=True,
                           progress=False, log=lambda msg: None)
            rows.append({"fold": k, "model": name if arch != "auto" else f"auto ({report.arch})",
                         "lrap": report.metrics["track_lrap"],
                         "coverage": report.metrics["track_coverage_error"],
                         "seconds": time.perf_counter() - started})
        for r in rows[-len(archs) - 1:]:
            print(f"fold {k}: {r['model']:20s} LRAP {r['lrap']:.3f} coverage "
                  f"{r['coverage']:.2f} ({r['seconds']:.0f} s)", flush=True)
        if args.json:  # after every fold: an interrupted run keeps the folds it finished
            with open(args.json, "w") as f:
                json.dump({"folds": rows, "by": args.by, "classes": classes}, f, indent=1)
    frame = pd.DataFrame(rows)
    frame["model"] = frame["model"].str.replace(r"auto \(.*\)", "auto", regex=True)
    summary = frame.groupby("model", sort=False).agg(
        lrap=("lrap", "mean"), lrap_std=("lrap", "std"), coverage=("coverage", "mean"),
        seconds=("seconds", "mean"))
    base = summary.loc["logistic baseline", "lrap"]
    print(f"\n| model | track LRAP (mean +- std over {args.folds} folds) | vs baseline | "
          "coverage error | training s per fold |\n|---|---|---|---|---|")
    for model, r in summary.iterrows():
        print(f"| {model} | {r.lrap:.3f} +- {r.lrap_std:.3f} | {r.lrap - base:+.3f} | "
              f"{r.coverage:.2f} | {r.seconds:.0f} |")
    print(f"(coverage bound: {y.sum(1).mean():.2f} labels per track)")


if __name__ == "__main__":
    main()
