"""Which way of combining labels' scores ranks the tracks that have all the labels first (run by
hand).

    python benchmarks/label_combination.py --store S [--feature-set HASH] [--archs kernel,linear]
                                           [--repeats 3] [--seed 0] [--min-tracks 20]
                                           [--min-together 3]

``featurestore rankings --label A --label B`` (``best_tracks``) answers "which cues fit A + B?"
by combining each track's scores for A and B (:data:`scoring.rankings.COMBINE`). This script
measures how well each way answers it on a store's real recordings. For ``--repeats``
reshuffles of 5 folds by track, a statistics model (``kernel`` or ``linear``, fitted as
``train`` fits it, ``C`` by the same cross-validation) scores every held-out track; its label
scores are the sigmoid of the decision values, as the saved model's are. Then for every pair
of labels that at least ``--min-together`` tracks carry together, the tracks are ranked by
each combination of their two scores, and the ranking's average precision for "has both
labels" is taken (scikit-learn's ``average_precision_score``). Prints per model and
combination the mean average precision over pairs and reshuffles, and in how many of them it
beat each other combination.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from model_quality import load_labelled, statistics_benchmark
from sklearn.metrics import average_precision_score
from sklearn.model_selection import KFold

from scoring.rankings import COMBINE, combine_scores
from training.linear import fit_statistics_model, statistics_of
from training.track_models import StatisticsLayout


def held_out_scores(x: np.ndarray, y: np.ndarray, arch: str, seed: int) -> np.ndarray:
    """Every track's label scores from the model fitted on the other four fifths."""
    out = np.zeros(y.shape)
    for fit, test in KFold(5, shuffle=True, random_state=seed).split(x):
        model, _, _ = fit_statistics_model(arch, x[fit], y[fit])
        out[test] = 1.0 / (1.0 + np.exp(-model.decision_function(x[test])))
    return out


def main() -> None:
    parser = statistics_benchmark(__doc__.splitlines()[0], repeats=3)
    parser.add_argument("--min-together", type=int, default=3,
                        help="tracks a pair of labels needs together to be measured")
    args = parser.parse_args()
    fset, tracks, y, classes, counts, tiles = load_labelled(args)
    pairs = [(a, b) for a, b in itertools.combinations(range(len(classes)), 2)
             if (y[:, a] * y[:, b]).sum() >= args.min_together]
    print("pairs measured: "
          + ", ".join(f"{classes[a]} + {classes[b]} ({int((y[:, a] * y[:, b]).sum())})"
                      for a, b in pairs))
    rows = []
    for arch in args.archs.split(","):
        layout = StatisticsLayout.for_model(arch, fset.spec.kind, fset.spec.tile_shape[0])
        x = statistics_of(tiles, counts, layout)
        for seed in range(args.seed, args.seed + args.repeats):
            scores = held_out_scores(x, y, arch, seed)
            for a, b in pairs:
                both = y[:, a] * y[:, b] > 0
                for combine in COMBINE:
                    rows.append((arch, seed, f"{classes[a]} + {classes[b]}", combine,
                                 average_precision_score(
                                     both, combine_scores(scores[:, [a, b]], combine))))
    frame = pd.DataFrame(rows, columns=["model", "seed", "pair", "combine", "ap"])
    wide = frame.pivot_table(index=["model", "seed", "pair"], columns="combine", values="ap")
    summary = []
    for arch, part in wide.groupby(level="model", sort=False):
        for combine in COMBINE:
            row = {"model": arch, "combine": combine, "mean AP": round(part[combine].mean(), 3)}
            for other in COMBINE:
                if other != combine:
                    row[f"above {other}"] = f"{(part[combine] > part[other]).sum()}/{len(part)}"
            summary.append(row)
    print(pd.DataFrame(summary).to_string(index=False, na_rep="-"))


if __name__ == "__main__":
    main()
