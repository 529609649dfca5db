"""Same-film neighbours of ``kernel`` embeddings with and without their frame codebook (run by
hand).

    python benchmarks/similarity_codebook.py --store STORE --models M0,M1,...

For each stored ``kernel`` fold model: its embedding without a codebook, and with the codebook
:func:`training.train` fits (``FrameCodebook.fit`` on the frames of the model's training and
validation tracks, seed 0; a codebook the model was saved with is set aside), against the
statistics baseline of ``featurestore evaluate``; every fold's test tracks are the queries,
their 10 nearest neighbours are searched among all tracks. Prints the codebook's fit and
embedding seconds per fold, then same-film precision at 10 and label Jaccard over all folds'
queries, and the precision per fold.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import featurestore
from featurestore.statuses import OK
from featurestore.tile_arrays import TileSource, read_tiles, tile_rows
from scoring.evaluate import split_tracks_of, statistics_baseline
from scoring.score_tables import KEY
from scoring.similarity import neighbour_figures
from training.codebook import FrameCodebook
from training.model_files import ModelFiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--models", required=True,
                        help="comma-separated kernel models of one feature set, one per fold")
    args = parser.parse_args()
    store = featurestore.open(args.store)
    names = args.models.split(",")
    first = ModelFiles(store, names[0]).read_complete_config()
    fset = first["feature_set"]
    tracks = store.tracks(feature_set=fset, status=OK).sort_values("tile_start")
    tracks = tracks.reset_index(drop=True)
    counts = tracks["n_tiles"].to_numpy(np.int64)
    rows = tile_rows(tracks["tile_start"].to_numpy(np.int64), counts)[0]
    tiles = torch.from_numpy(read_tiles(TileSource(store.feature_set(fset).tiles_url), rows))
    starts = np.concatenate([[0], np.cumsum(counts)])
    films, labels = tracks["film"], tracks[first["label_column"]]
    baseline = statistics_baseline(store, fset, tracks)
    totals: dict[str, dict] = {}
    for name in names:
        files = ModelFiles(store, name)
        test = tracks.reset_index().merge(split_tracks_of(files, "test"), on=KEY)["index"]
        test = test.to_numpy()
        fitted_on = pd.concat([split_tracks_of(files, side) for side in ("train", "val")])
        seen = tracks.reset_index().merge(fitted_on, on=KEY)["index"].to_numpy()
        model = files.load_model()
        model.codebook = FrameCodebook(tiles.shape[1])  # none, whatever it was saved with
        with torch.inference_mode():
            _, without = model.track_outputs(tiles[:, None], torch.tensor(counts))
            started = time.perf_counter()
            model.codebook.fit(torch.cat([tiles[starts[i]:starts[i + 1]] for i in seen]), seed=0)
            fitted = time.perf_counter() - started
            started = time.perf_counter()
            _, with_codebook = model.track_outputs(tiles[:, None], torch.tensor(counts))
            embedded = time.perf_counter() - started
        print(f"{name}: codebook fitted in {fitted:.1f} s, {len(tiles)} tiles embedded in "
              f"{embedded:.1f} s, {with_codebook.shape[1]} values", flush=True)
        for key, vectors in (("feature statistics", baseline),
                             ("kernel without codebook", without.numpy()),
                             ("kernel with codebook", with_codebook.numpy())):
            figures = neighbour_figures(vectors, films, labels, test, 10)
            total = totals.setdefault(key, {"n": 0, "precision": 0.0, "jaccard": 0.0,
                                            "folds": []})
            total["n"] += len(test)
            total["precision"] += figures["same_film_precision"] * len(test)
            total["jaccard"] += figures["label_jaccard"] * len(test)
            total["folds"].append(round(figures["same_film_precision"], 3))
    for key, total in totals.items():
        print(f"{key:24s} same-film P@10 {total['precision'] / total['n']:.3f}  "
              f"label Jaccard {total['jaccard'] / total['n']:.3f}  folds {total['folds']}")


if __name__ == "__main__":
    main()
