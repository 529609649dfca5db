"""Whether a library's rankings score the tracks a model was fitted on like music it has not
heard: the model's own scores against cross-fitted ones (run by hand).

    python benchmarks/library_rankings.py --store S [--feature-set HASH] [--archs kernel,linear]
                                          [--repeats 2] [--seed 0] [--min-tracks 20]

Scoring ranks the whole library, the tracks the model was fitted on among them. For
``--repeats`` reshuffles of 5 folds by track, a statistics model (fitted as ``train`` fits it,
``C`` by the same cross-validation) is fitted on four fifths, "the library it learned", and
scores the last fifth, "new music". The library's tracks are scored two ways: by the model
itself (in-sample) and cross-fitted (:func:`training.linear.cross_fitted`, as scoring serves
them). For every label, two probabilities that would be 0.5 if fitted and new tracks were
scored alike: that a new track with the label outscores a fitted track with it, and that a new
track without it outscores a fitted track without it (the area under the ROC curve of "new"
against "fitted" among the label's positives, and among its negatives). Prints their means
over labels and reshuffles per model and way, and how many of the label's fitted positives'
scores are distinct to four decimals.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from model_quality import load_labelled, statistics_benchmark
from scipy.special import expit
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import KFold

from training.linear import cross_fitted, fit_statistics_model, statistics_of
from training.track_models import StatisticsLayout


def new_above_fitted(fitted: np.ndarray, new: np.ndarray) -> float:
    """P(a new track's score > a fitted track's), ties counting half; NaN without both."""
    if not len(fitted) or not len(new):
        return float("nan")
    return roc_auc_score(np.r_[np.zeros(len(fitted)), np.ones(len(new))], np.r_[fitted, new])


def main() -> None:
    args = statistics_benchmark(__doc__.splitlines()[0], repeats=2).parse_args()
    fset, tracks, y, classes, counts, tiles = load_labelled(args)
    rows = []
    for arch in args.archs.split(","):
        layout = StatisticsLayout.for_model(arch, fset.spec.kind, fset.spec.tile_shape[0])
        x = statistics_of(tiles, counts, layout)
        for seed in range(args.seed, args.seed + args.repeats):
            for fit, new in KFold(5, shuffle=True, random_state=seed).split(x):
                model, c, _ = fit_statistics_model(arch, x[fit], y[fit], seed)
                new_scores = expit(model.decision_function(x[new]))
                ways = {"in-sample": expit(model.decision_function(x[fit])),
                        "cross-fitted": expit(cross_fitted(arch, x[fit], y[fit], c,
                                                             seed=seed))}
                for way, fitted_scores in ways.items():
                    for k, label in enumerate(classes):
                        has, had = y[new, k] > 0, y[fit, k] > 0
                        rows.append({
                            "arch": arch, "way": way, "label": label,
                            "positives": new_above_fitted(fitted_scores[had, k],
                                                          new_scores[has, k]),
                            "negatives": new_above_fitted(fitted_scores[~had, k],
                                                          new_scores[~has, k]),
                            "distinct": len(np.unique(fitted_scores[had, k].round(4)))
                            / max(had.sum(), 1)})
    table = pd.DataFrame(rows).groupby(["arch", "way"], sort=False)[
        ["positives", "negatives", "distinct"]].mean()
    table.columns = ["P(new positive above fitted positive)",
                     "P(new negative above fitted negative)",
                     "share of fitted positives' scores distinct"]
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
