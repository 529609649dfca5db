"""Same-film neighbours of ``kernel`` embeddings with and without their frame codebook (run by
hand).

    python benchmarks/similarity_codebook.py --store STORE --models M0,M1,... [--compare-chunk N]

For each stored ``kernel`` fold model: its embedding without a codebook, and with the codebook
:func:`training.train` fits (``FrameCodebook.fit`` on the frames of the model's training and
validation tracks, seed 0; a codebook the model was saved with is set aside), against the
statistics baseline of ``featurestore evaluate``; every fold's test tracks are the queries,
their 10 nearest neighbours are searched among all tracks. Prints the codebook's fit and
embedding seconds per fold, then the table of ``similarity_variants.py``: same-film precision
at 10 per fold and over all folds' queries, label Jaccard, and the folds above the embedding
without a codebook. With ``--compare-chunk N``, each fold also embeds with the frames assigned
to their words in blocks of N (against :data:`training.codebook.ASSIGN_CHUNK`) and prints that
time beside.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch

import featurestore
from scoring.evaluate import split_tracks_of
from scoring.similarity import neighbour_figures
from similarity_variants import add_figures, figures_table, library, rows_of
from training import codebook
from training.codebook import FrameCodebook
from training.model_files import ModelFiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--models", required=True,
                        help="comma-separated kernel models of one feature set, one per fold")
    parser.add_argument("--compare-chunk", type=int, metavar="N",
                        help="also time the embedding with words assigned N frames at a time")
    args = parser.parse_args()
    store = featurestore.open(args.store)
    names = args.models.split(",")
    tracks, counts, tiles, films, labels, baseline = library(store, names)
    x, c = torch.from_numpy(tiles), torch.tensor(counts)
    starts = np.cumsum(counts) - counts
    rows: dict[str, dict] = {}
    for fold, name in enumerate(names):
        files = ModelFiles(store, name)
        test = rows_of(tracks, split_tracks_of(files, "test"))
        seen = rows_of(tracks, pd.concat([split_tracks_of(files, side)
                                          for side in ("train", "val")]))
        model = files.load_model()
        model.codebook = FrameCodebook(x.shape[1])  # none, whatever it was saved with
        with torch.inference_mode():
            _, without = model.track_outputs(x[:, None], c)
            started = time.perf_counter()
            model.codebook.fit(torch.cat([x[starts[i]:starts[i] + counts[i]] for i in seen]),
                               seed=0)
            fitted = time.perf_counter() - started
            started = time.perf_counter()
            _, with_codebook = model.track_outputs(x[:, None], c)
            embedded = time.perf_counter() - started
            if args.compare_chunk:
                default, codebook.ASSIGN_CHUNK = codebook.ASSIGN_CHUNK, args.compare_chunk
                started = time.perf_counter()
                model.track_outputs(x[:, None], c)
                compared = time.perf_counter() - started
                codebook.ASSIGN_CHUNK = default
        print(f"{name}: codebook fitted in {fitted:.1f} s, {len(x)} tiles embedded in "
              f"{embedded:.1f} s, {with_codebook.shape[1]} values"
              + (f"; in blocks of {args.compare_chunk} frames {compared:.1f} s "
                 f"({compared / embedded:.2f}x)" if args.compare_chunk else ""), flush=True)
        for variant, vectors in (("feature statistics", baseline),
                                 ("kernel without codebook", without.numpy()),
                                 ("kernel with codebook", with_codebook.numpy())):
            add_figures(rows, variant, fold, neighbour_figures(vectors, films, labels, test, 10))
    print(figures_table(rows, len(names), 10, "kernel without codebook").to_string(index=False))


if __name__ == "__main__":
    main()
