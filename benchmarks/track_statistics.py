"""Which per-track statistics the statistics models rank best with (run by hand).

    python benchmarks/track_statistics.py --store S [--repeats 3] [--seed 3] [--log-mel HASH]

On the store's MFCC feature set, compares mean and standard deviation per feature row against
mean, standard deviation and the quantiles of :data:`training.track_models.QUANTILES`, for the
``kernel`` and ``linear`` estimators (``C`` chosen as ``train`` chooses it), over ``--repeats``
reshuffles of 5 folds by track and 5 folds by film, beside the logistic baseline of
``model_quality.py``. With ``--log-mel`` (a log-mel feature set of the same tracks), also the
statistics ``kernel`` takes from log-mel tiles: each band's mean and standard deviation, and the
statistics with quantiles of the frames' cepstra (:data:`training.track_models.CEPSTRA`). Prints
mean LRAP per variant, the share of folds where the quantiles won, and where the log-mel
statistics beat the MFCC quantiles.
"""

from __future__ import annotations

import argparse
import warnings

import pandas as pd
from model_quality import baseline, labelled_tracks, mfcc_statistics, read_track_tiles
from sklearn.metrics import label_ranking_average_precision_score as lrap
from sklearn.model_selection import GroupKFold, KFold

import featurestore
from featurestore.statuses import OK
from training.linear import ESTIMATORS, fit_statistics_model, statistics_of
from training.track_models import QUANTILES, StatisticsLayout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=3, help="first reshuffle's seed")
    parser.add_argument("--min-tracks", type=int, default=20)
    parser.add_argument("--log-mel", help="a log-mel feature set's hash, to compare its statistics")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    store = featurestore.open(args.store)
    mfcc = store.feature_set(featurestore.FeatureSpec())
    tracks, y, _ = labelled_tracks(store, mfcc, args.min_tracks)
    counts, tiles = read_track_tiles(mfcc, tracks)
    x = {"moments": statistics_of(tiles, counts),
         "quantiles": statistics_of(tiles, counts, StatisticsLayout(QUANTILES))}
    if args.log_mel:
        logmel = store.feature_set(args.log_mel)
        mel_rows = tracks[["catalog", "track_id"]].merge(
            store.tracks(feature_set=logmel.hash, status=OK), on=["catalog", "track_id"])
        if len(mel_rows) != len(tracks):
            raise SystemExit(f"feature set {logmel.hash} lacks {len(tracks) - len(mel_rows)} "
                             "of the MFCC set's tracks: build it from the same catalog")
        layout = StatisticsLayout.for_model("kernel", logmel.spec.kind,
                                            logmel.spec.tile_shape[0])
        mel_counts, mel_tiles = read_track_tiles(logmel, mel_rows)
        x["log-mel bands + cepstra"] = statistics_of(mel_tiles, mel_counts, layout)
    base_x = mfcc_statistics(store, tracks)
    films = tracks["film"].astype(str).to_numpy()
    splits = [("track", s, fit, test) for s in range(args.seed, args.seed + args.repeats)
              for fit, test in KFold(5, shuffle=True, random_state=s).split(y)]
    splits += [("film", 0, fit, test) for fit, test in GroupKFold(5).split(y, groups=films)]
    rows = []
    for k, (by, seed, fit, test) in enumerate(splits):
        rows.append((by, k, "logistic baseline", lrap(y[test], baseline(base_x, y, fit, test))))
        for arch in ESTIMATORS:
            for name, values in x.items():
                model, _, _ = fit_statistics_model(arch, values[fit], y[fit])
                rows.append((by, k, f"{arch}, {name}",
                             lrap(y[test], model.decision_function(values[test]))))
        print(f"{by} fold {k}: " + ", ".join(
            f"{m} {v:.3f}" for b, _, m, v in rows[-1 - len(ESTIMATORS) * len(x):]), flush=True)
    frame = pd.DataFrame(rows, columns=["by", "fold", "model", "lrap"])
    for by, part in frame.groupby("by", sort=False):
        wide = part.pivot(index="fold", columns="model", values="lrap")
        print(f"\nby {by}, {len(wide)} folds: mean LRAP")
        print(wide.mean().round(3).to_string())
        for arch in ESTIMATORS:
            won = (wide[f"{arch}, quantiles"] > wide[f"{arch}, moments"]).mean()
            print(f"{arch}: quantiles won {won:.0%} of the folds")
            if args.log_mel:
                won = (wide[f"{arch}, log-mel bands + cepstra"]
                       > wide[f"{arch}, quantiles"]).mean()
                print(f"{arch}: log-mel statistics beat the MFCC quantiles in {won:.0%} of "
                      "the folds")


if __name__ == "__main__":
    main()
