"""Similarity search over track embeddings: "cues like this one".

:class:`ExactIndex` answers by exact cosine similarity: the library's unit vectors multiplied
by the queries block by block (numpy, BLAS threads), keeping each block's best ``k``. A query
over 1,000,000 embeddings of 128 values takes well under a second on 2 cores
(``benchmarks/similarity_search.py``). Any object with the same ``search`` (a
:class:`SearchIndex`) can stand in for it, e.g. an approximate index over a far larger library;
:func:`similar` takes the index class as ``index``.

:func:`similar` finds the tracks nearest a library track or a reference audio file, among the
current tracks that pass the filters of :meth:`featurestore.Store.tracks`.
:func:`neighbour_figures` measures a set of embeddings by the neighbours it finds: same-film
precision and label overlap (Jaccard) of the ``k`` nearest.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import pandas as pd

from featurestore.errors import check_counts
from featurestore.store import Store
from scoring.rankings import SHOWN, model_scores, scored_tracks
from scoring.score_tables import KEY

#: Library rows multiplied at once: 65,536 x 128 float32 is 32 MiB, small enough to stay
#: bounded and large enough for BLAS to run at full speed.
BLOCK_ROWS = 65536


class SearchIndex(Protocol):
    """What similarity search needs of an index over ``n`` library vectors."""

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` library rows most similar to each query, best first: ``(similarity,
        row)``, each ``(queries, k)``; rows where ``allowed`` (a boolean mask over the
        library) is false are never returned. Fewer than ``k`` candidates: row -1 and
        similarity -inf fill the rest."""


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (rows of zeros stay zeros: similarity 0)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


class ExactIndex:
    """Exact cosine search over ``vectors`` ``(n, size)``, kept as unit float32 rows
    (``n * size * 4`` bytes)."""

    def __init__(self, vectors: np.ndarray, block_rows: int = BLOCK_ROWS):
        if vectors.ndim != 2:
            raise ValueError(f"vectors of shape {vectors.shape}: one row per track expected")
        self.vectors = unit(vectors)
        self.block_rows = block_rows

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int,
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """See :meth:`SearchIndex.search`. Ties keep library order."""
        queries = unit(np.atleast_2d(queries))
        if queries.shape[1] != self.vectors.shape[1]:
            raise ValueError(f"queries of {queries.shape[1]} values for a library of "
                             f"{self.vectors.shape[1]}-value embeddings")
        n_queries, k = len(queries), max(int(k), 0)
        best_sim = np.full((n_queries, 0), -np.inf, np.float32)
        best_row = np.zeros((n_queries, 0), np.int64)
        for start in range(0, len(self.vectors), self.block_rows):
            block = self.vectors[start:start + self.block_rows]
            sims = queries @ block.T  # (queries, rows of the block)
            if allowed is not None:
                sims[:, ~allowed[start:start + len(block)]] = -np.inf
            if k < sims.shape[1]:  # each block's best k: all that can reach the top k
                part = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k else sims[:, :0]
            else:
                part = np.broadcast_to(np.arange(sims.shape[1]), sims.shape)
            best_sim = np.concatenate([best_sim, np.take_along_axis(sims, part, 1)], axis=1)
            best_row = np.concatenate([best_row, part + start], axis=1)
        # best first; among equal similarities the earlier row (lexsort: last key first)
        order = np.lexsort((best_row, -best_sim), axis=1)[:, :k]
        sims, rows = np.take_along_axis(best_sim, order, 1), np.take_along_axis(best_row, order, 1)
        missing = ~np.isfinite(sims)
        rows[missing] = -1
        if sims.shape[1] < k:  # fewer library rows than k
            pad = k - sims.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            rows = np.pad(rows, ((0, 0), (0, pad)), constant_values=-1)
        return sims, rows


def _query_row(rows: pd.DataFrame, track: str, catalog: str | None, model: str) -> int:
    """The library row of the query track; a clear error when it is not there, or is in
    several catalogs."""
    hits = rows.index[(rows["track_id"] == track).to_numpy()
                      & (True if catalog is None else (rows["catalog"] == catalog).to_numpy())]
    if len(hits) == 0:
        raise ValueError(f"track {track!r}{f' of catalog {catalog!r}' if catalog else ''} has "
                         f"no current embedding of model {model!r} (not in the store, not "
                         "built, or changed since the last scoring run: run `featurestore "
                         "score`)")
    if len(hits) > 1:
        raise ValueError(f"track {track!r} is in several catalogs "
                         f"({', '.join(rows.loc[hits, 'catalog'])}); name one with "
                         "--track-catalog")
    return int(hits[0])


def similar(store: Store, model: str, track: str | None = None, *, audio: str | None = None,
            top: int = 20, track_catalog: str | None = None, exclude_own_film: bool = False,
            version: str | None = None, index: type = ExactIndex,
            storage_options: dict | None = None, **filters) -> pd.DataFrame:
    """The ``top`` tracks most similar to a library ``track`` (its id; ``track_catalog`` when
    several catalogs hold it) or to a reference ``audio`` file (embedded on the fly with the
    model's feature spec), by cosine similarity of ``model``'s track embeddings, best first.

    Only current tracks are candidates (built and unchanged since scoring), never the query
    itself; ``filters`` narrow them as :meth:`featurestore.Store.tracks` does (``film``,
    ``year``, ``genres``, ``where`` ...); ``exclude_own_film`` leaves out the query track's
    film. ``index``: the :class:`SearchIndex` class built over the embeddings.

    Returns a DataFrame: ``rank``, ``catalog``, ``track_id``, ``similarity``, then the
    track's title, film, composer, year and genres.
    """
    from scoring.embeddings import audio_embedding, current_embeddings

    if (track is None) == (audio is None):
        raise ValueError("give a track id or a reference audio file, not both"
                         if track is not None else
                         "give a track id or a reference audio file to search from")
    if track_catalog is not None and audio is not None:
        raise ValueError("track_catalog (--track-catalog) names the query track's catalog; a "
                         "reference audio file is in none")
    if exclude_own_film and audio is not None:
        raise ValueError("a reference audio file has no film to exclude; narrow the "
                         "candidates with the filters instead (e.g. --where \"film != '...'\")")
    check_counts(top=top)
    table = model_scores(store, model, version)
    rows, matrix = current_embeddings(store, table)
    if audio is not None:
        query = audio_embedding(store, model, audio, table.version, storage_options)
        allowed = np.ones(len(rows), bool)
    else:
        at = _query_row(rows, track, track_catalog, model)
        query = matrix[at]
        allowed = np.ones(len(rows), bool)
        allowed[at] = False
        if exclude_own_film:
            film = rows.at[at, "film"] if "film" in rows else None
            if film is None or pd.isna(film):
                raise ValueError(f"track {track!r} has no film to exclude")
            allowed &= (rows["film"] != film).to_numpy()
    if any(v is not None for v in filters.values()):
        chosen = scored_tracks(store, table.info().feature_set, filters, columns=[])
        allowed &= pd.MultiIndex.from_frame(rows[KEY]).isin(
            pd.MultiIndex.from_frame(chosen[KEY]))
    if len(rows) and matrix.shape[1] != len(query):
        raise ValueError(f"the reference's embedding has {len(query)} values, the library's "
                         f"{matrix.shape[1]}")
    sims, found = index(matrix).search(query[None], top, allowed) if len(rows) else (
        np.zeros((1, 0)), np.zeros((1, 0), np.int64))
    keep = found[0] >= 0
    out = rows.iloc[found[0][keep]].reset_index(drop=True)
    out.insert(2, "similarity", sims[0][keep].astype(np.float32))
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out[["rank", *KEY, "similarity", *[c for c in SHOWN if c in out.columns]]]


def _label_set(value) -> frozenset:
    if isinstance(value, (list, tuple, np.ndarray)):
        return frozenset(map(str, value))
    return frozenset() if value is None or (isinstance(value, float) and np.isnan(value)) \
        else frozenset([str(value)])


def neighbour_figures(vectors: np.ndarray, films: pd.Series, labels: pd.Series,
                      queries: np.ndarray, k: int = 10) -> dict:
    """How well ``vectors`` (one row per library track) find related tracks: for each query
    row, its ``k`` nearest other tracks by cosine; ``same_film_precision`` (the share of them
    from the query's film, over queries with a film) and ``label_jaccard`` (the mean Jaccard
    overlap of their labels with the query's, over queries with labels)."""
    index = ExactIndex(vectors)
    films = films.to_numpy(object)
    label_sets = [_label_set(v) for v in labels]
    precision, jaccard = [], []
    for q in np.asarray(queries, dtype=np.int64):
        allowed = np.ones(len(vectors), bool)
        allowed[q] = False
        _, rows = index.search(vectors[q][None], k, allowed)
        rows = rows[0][rows[0] >= 0]
        if not len(rows):
            continue
        if films[q] is not None and not pd.isna(films[q]):
            precision.append(float(np.mean([films[r] == films[q] for r in rows])))
        if label_sets[q]:
            jaccard.append(float(np.mean([len(label_sets[q] & label_sets[r])
                                          / len(label_sets[q] | label_sets[r]) for r in rows])))
    return {"k": k, "queries": int(len(queries)), "library": int(len(vectors)),
            "same_film_precision": float(np.mean(precision)) if precision else None,
            "label_jaccard": float(np.mean(jaccard)) if jaccard else None}
