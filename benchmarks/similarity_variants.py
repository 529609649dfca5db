"""Which `kernel` track embedding finds same-film neighbours best: the one scoring writes against
cheap variants of it, on the test tracks of each fold's stored model (run by hand).

    python benchmarks/similarity_variants.py --store S --models q-kernel-0-0,q-kernel-0-1,...

For each model (one cross-validation fold each, as ``benchmarks/model_quality.py`` trains
them), every variant embeds all of the store's tracks of the model's feature set from the
model's own parts (its scaler, support vectors and decision values) and the tiles; each test
track's 10 nearest other tracks by cosine give the same-film precision and label overlap of
``featurestore evaluate`` (:func:`scoring.similarity.neighbour_figures`). Prints one row per
variant: the precision on each fold, over all folds' test tracks together, the label overlap,
and on how many folds the variant beats the written embedding.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import torch
from model_quality import read_track_tiles

import featurestore
from featurestore.statuses import OK
from scoring.evaluate import split_tracks_of, standardized, statistics_baseline
from scoring.score_tables import KEY
from scoring.similarity import neighbour_figures, unit
from training.linear import statistics_of
from training.model_files import ModelFiles


def extra_statistics(tiles: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Per track, statistics the model does not use: the 10th, 50th and 90th percentile of
    every feature row over the track's frames, and the mean and std of its frame-to-frame
    differences."""
    quantiles, deltas = [], []
    for part in np.split(tiles, np.cumsum(counts)[:-1]):
        frames = part.transpose(1, 0, 2).reshape(part.shape[1], -1)
        quantiles.append(np.percentile(frames, [10, 50, 90], axis=1).ravel())
        step = np.diff(part, axis=2)
        deltas.append(np.concatenate([np.abs(step).mean((0, 2)), step.std((0, 2))]))
    return {"quantiles": standardized(np.stack(quantiles)),
            "deltas": standardized(np.stack(deltas))}


def variants(model, tiles: np.ndarray, counts: np.ndarray, extra: dict) -> dict[str, np.ndarray]:
    """The embeddings compared, each ``(tracks, size)``."""
    with torch.inference_mode():
        x, c = torch.from_numpy(tiles)[:, None], torch.tensor(counts)
        logits, written = model.track_outputs(x, c)
        z = (torch.from_numpy(statistics_of(tiles, counts, model.layout)) - model.center) / \
            model.scale
        kernel = torch.exp(-model.gamma * torch.cdist(z, model.support).square()).numpy()
    z, logits, scores = z.numpy(), logits.double().numpy(), logits.sigmoid().double().numpy()
    centred = z - z.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    whitened = centred @ vt[:20].T / s[:20]

    def with_scores(stats, weight=4.0, part=scores):
        return np.concatenate([unit(stats), weight * unit(part)], axis=1)

    return {
        "written (statistics + 4 x scores)": written.numpy(),
        "statistics standardized over the library + 4 x scores": with_scores(standardized(z)),
        "statistics PCA-whitened (20) + 4 x scores": with_scores(whitened),
        "statistics and quantiles + 4 x scores": with_scores(
            np.concatenate([z, extra["quantiles"]], 1)),
        "statistics and deltas + 4 x scores": with_scores(
            np.concatenate([z, extra["deltas"]], 1)),
        "statistics + 4 x decision values": with_scores(z, part=logits),
        "statistics + 3 x scores": with_scores(z, 3.0),
        "statistics + 6 x scores": with_scores(z, 6.0),
        "RBF similarities to the support vectors": kernel,
        "RBF similarities to the support vectors + 4 x scores": with_scores(kernel),
        "scores alone": scores,
    }


def library(store, names: list[str]) -> tuple:
    """What every fold model of ``names`` (one feature set) is measured on: the feature set's
    built tracks in tile order, their tile counts and tiles, films, labels (the first model's
    label column) and ``featurestore evaluate``'s statistics baseline."""
    first = ModelFiles(store, names[0]).read_complete_config()
    feature_set = first["feature_set"]
    tracks = store.tracks(feature_set=feature_set, status=OK).sort_values(
        "tile_start").reset_index(drop=True)
    counts, tiles = read_track_tiles(store.feature_set(feature_set), tracks)
    return (tracks, counts, tiles, tracks["film"], tracks[first["label_column"]],
            statistics_baseline(store, feature_set, tracks))


def rows_of(tracks, keys) -> np.ndarray:
    """The rows of ``tracks`` whose ``catalog, track_id`` are among ``keys``."""
    return tracks.reset_index().merge(keys, on=KEY)["index"].to_numpy()


def add_figures(rows: dict, variant: str, fold: int, got: dict) -> None:
    """Add one fold's :func:`neighbour_figures` of ``variant`` to ``rows``."""
    row = rows.setdefault(variant, {"queries": 0, "precision": 0.0, "jaccard": 0.0})
    row[f"fold {fold}"] = got["same_film_precision"]
    # over all folds' test tracks together: each fold weighted by its queries
    row["queries"] += got["queries"]
    row["precision"] += got["same_film_precision"] * got["queries"]
    row["jaccard"] += got["label_jaccard"] * got["queries"]


def figures_table(rows: dict, folds: int, k: int, reference: str) -> pd.DataFrame:
    """One row per variant: precision per fold and over all queries, label overlap, and on
    how many folds it finds more same-film neighbours than ``reference``."""
    base = rows[reference]
    return pd.DataFrame([{
        "variant": variant,
        **{f"fold {i}": round(row[f"fold {i}"], 3) for i in range(folds)},
        f"P@{k} all": round(row["precision"] / row["queries"], 3),
        "label Jaccard": round(row["jaccard"] / row["queries"], 3),
        f"folds above {reference}": sum(row[f"fold {i}"] > base[f"fold {i}"] + 1e-9
                                        for i in range(folds))}
        for variant, row in rows.items()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--models", required=True, help="comma-separated, one per fold")
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    store = featurestore.open(args.store)
    names = args.models.split(",")
    tracks, counts, tiles, films, labels, baseline = library(store, names)
    extra = extra_statistics(tiles, counts)
    rows: dict[str, dict] = {}
    for fold, name in enumerate(names):
        files = ModelFiles(store, name)
        test = rows_of(tracks, split_tracks_of(files, "test"))
        found = variants(files.load_model(), tiles, counts, extra)
        found["feature statistics (evaluate's baseline)"] = baseline
        for variant, vectors in found.items():
            add_figures(rows, variant, fold, neighbour_figures(vectors, films, labels, test,
                                                               args.k))
    print(figures_table(rows, len(names), args.k, "written (statistics + 4 x scores)")
          .to_string(index=False))


if __name__ == "__main__":
    main()
