"""Which classes a model learns, and each track's targets over them."""

from __future__ import annotations

import numpy as np
import pandas as pd

from catalogs.genres import normalize_genre
from catalogs.labels import DEFAULT_LABELS, label_lists
from catalogs.statistics import membership
from training.config import TrainingError


def select_classes(tracks: pd.DataFrame, label_column: str = DEFAULT_LABELS,
                   labels: tuple[str, ...] = (), min_tracks: int = 20) -> list[str]:
    """The explicit ``labels`` (each must occur; aliases and repeats count once), else every
    label with at least ``min_tracks`` tracks, most frequent first. At least two: a ranking of
    one label ranks nothing."""
    table = membership(tracks, label_column)
    if labels:
        names = list(dict.fromkeys(
            normalize_genre(n)[0] if label_column == DEFAULT_LABELS else n.strip()
            for n in labels))
        unknown = [n for n in names if n not in table.index]
        if unknown:
            raise TrainingError(f"label(s) {', '.join(unknown)} occur in no built track of "
                                f"column {label_column!r} (labels: {', '.join(table.index)})")
        if len(names) < 2:
            raise TrainingError(f"labels {', '.join(labels)}: name at least two labels to "
                                "rank (a model ranks each track's labels)")
        return names
    kept = list(table.index[table["tracks"] >= min_tracks])
    if len(kept) < 2:
        raise TrainingError(f"only {len(kept)} label(s) of {label_column!r} have at least "
                            f"{min_tracks} tracks; lower --min-tracks or name --labels")
    return kept


def multi_hot(tracks: pd.DataFrame, classes: list[str],
              label_column: str = DEFAULT_LABELS) -> np.ndarray:
    """``(n_tracks, n_classes)`` float32: 1 where the track carries the class."""
    position = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(tracks), len(classes)), dtype=np.float32)
    for row, names in enumerate(label_lists(tracks, label_column)):
        for name in names:
            if name in position:
                out[row, position[name]] = 1.0
    return out
