"""Label sets: which column of a catalog holds a track's labels, and reading it.

``genres`` is the default, but any list or string column can serve (a user's own vocabulary:
moods, energy levels, supervisors' tags). A string cell holds one label or several separated by
``|``, ``,``, ``;`` or ``/``; a list cell holds them as given; a missing cell holds none.
"""

from __future__ import annotations

import pandas as pd

from catalogs.genres import split_labels

DEFAULT_LABELS = "genres"


class LabelColumnError(ValueError):
    """The requested label column is not in the catalog."""


def label_lists(frame: pd.DataFrame, column: str = DEFAULT_LABELS) -> pd.Series:
    """Each track's labels in ``frame[column]`` as a list of strings (index kept)."""
    if column not in frame.columns:
        raise LabelColumnError(f"label column {column!r} is not in the catalog (columns: "
                               f"{', '.join(map(str, frame.columns))})")
    return pd.Series([split_labels(v) for v in frame[column].tolist()], index=frame.index,
                     dtype=object, name=column)


def vocabulary(labels: pd.Series) -> list[str]:
    """The distinct labels of ``labels`` (lists), most frequent first, ties by name."""
    counts = labels.explode().dropna().value_counts()
    return sorted(counts.index, key=lambda name: (-counts[name], name))
