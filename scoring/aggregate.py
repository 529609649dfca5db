"""From tile scores to track scores and label rankings.

The study averages a track's tile scores into its track score; ``max`` (a label that fits any
part of the cue) and ``median`` (robust to a few odd tiles) are the common alternatives.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

AGGREGATES = ("mean", "max", "median")
#: Recorded as the aggregate of a track-level model, which scores a track from all its tiles.
POOLED = "pooled"


def aggregate(tile_scores: np.ndarray, counts: np.ndarray, how: str = "mean") -> np.ndarray:
    """Track scores ``(tracks, labels)`` from tile scores stored track after track, ``counts``
    tiles each (every count at least one)."""
    counts = np.asarray(counts, dtype=np.int64)
    if how not in AGGREGATES:
        raise ValueError(f"aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
    if len(counts) == 0:
        return np.zeros((0, tile_scores.shape[1]), dtype=np.float32)
    if (counts < 1).any() or counts.sum() != len(tile_scores):
        raise ValueError("every track needs at least one tile, and the counts must add up to "
                         "the number of tile scores")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    if how == "mean":
        out = np.add.reduceat(tile_scores.astype(np.float64), starts) / counts[:, None]
    elif how == "max":
        out = np.maximum.reduceat(tile_scores, starts)
    else:
        out = np.stack([np.median(part, axis=0)
                        for part in np.split(tile_scores, np.cumsum(counts)[:-1])])
    return out.astype(np.float32)


def ranks(scores: np.ndarray) -> np.ndarray:
    """Each label's rank within its row, 1 for the highest score; ties keep label order."""
    order = np.argsort(-scores, axis=1, kind="stable")
    out = np.empty_like(order)
    np.put_along_axis(out, order, np.arange(1, scores.shape[1] + 1)[None, :], axis=1)
    return out.astype(np.int32)


def ranking_rows(tracks: pd.DataFrame, scores: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """Long-form rankings: one row per track and label with ``score`` and ``rank``, the columns
    of ``tracks`` repeated beside them; rows in track order, best label first."""
    n, c = scores.shape
    rank = ranks(scores)
    order = np.argsort(rank, axis=1)  # labels of each row, best first
    rows = np.repeat(np.arange(n), c)
    cols = order.ravel()
    out = tracks.iloc[rows].reset_index(drop=True)
    out["label"] = np.asarray(classes, dtype=object)[cols]
    out["score"] = scores[rows, cols]
    out["rank"] = rank[rows, cols]
    return out
