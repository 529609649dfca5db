"""Catalog statistics, as the reference study reports them, over any label column.

Every function takes a tracks frame (one row per track, as ``Store.tracks()`` gives it): a label
column, and, where tiles or hours are asked for, ``n_tiles`` and ``duration_s`` (0 and missing
for tracks not built). A track counts under each of its labels, as a tile does in training.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd

from catalogs.labels import DEFAULT_LABELS, label_lists, vocabulary


def _built(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    tiles = frame["n_tiles"].fillna(0).astype("int64") if "n_tiles" in frame else pd.Series(
        0, index=frame.index)
    seconds = (frame["duration_s"].astype("float64").where(tiles > 0, 0.0).fillna(0.0)
               if "duration_s" in frame else pd.Series(0.0, index=frame.index))
    return tiles, seconds


def membership(frame: pd.DataFrame, labels: str = DEFAULT_LABELS) -> pd.DataFrame:
    """Per label: ``tracks``, ``share`` (of all tracks), ``tiles`` and ``hours`` built.
    Most tracks first."""
    lists = label_lists(frame, labels)
    tiles, seconds = _built(frame)
    long = pd.DataFrame({"label": lists, "tiles": tiles, "seconds": seconds}).explode("label")
    long = long.dropna(subset=["label"])
    out = long.groupby("label").agg(tracks=("label", "size"), tiles=("tiles", "sum"),
                                    hours=("seconds", "sum"))
    out["hours"] = out["hours"] / 3600.0
    out["share"] = out["tracks"] / max(len(frame), 1)
    out = out.reindex(vocabulary(lists))[["tracks", "share", "tiles", "hours"]]
    out.index.name = labels
    return out


def cooccurrence(frame: pd.DataFrame, labels: str = DEFAULT_LABELS) -> pd.DataFrame:
    """Square table: tracks carrying both labels (the diagonal: tracks carrying the label)."""
    lists = label_lists(frame, labels)
    names = vocabulary(lists)
    position = {n: i for i, n in enumerate(names)}
    counts = np.zeros((len(names), len(names)), dtype=np.int64)
    for track in lists:
        idx = [position[n] for n in track]
        counts[np.ix_(idx, idx)] += 1
    return pd.DataFrame(counts, index=pd.Index(names, name=labels), columns=names)


def bigrams(frame: pd.DataFrame, labels: str = DEFAULT_LABELS) -> pd.DataFrame:
    """Every label pair that occurs together, with its track count, most frequent first
    (``first`` < ``second`` alphabetically). Pairs that never occur are left out."""
    counts: dict[tuple[str, str], int] = {}
    for track in label_lists(frame, labels):
        for pair in combinations(sorted(track), 2):
            counts[pair] = counts.get(pair, 0) + 1
    out = pd.DataFrame([(a, b, n) for (a, b), n in counts.items()],
                       columns=["first", "second", "tracks"])
    return out.sort_values(["tracks", "first", "second"], ascending=[False, True, True],
                           ignore_index=True)


def year_by_label(frame: pd.DataFrame, labels: str = DEFAULT_LABELS) -> pd.DataFrame:
    """Per label: ``mean`` and ``std`` (sample, ddof 1) of release year, and ``tracks`` with a
    year. Oldest mean last, as the study lists them."""
    lists = label_lists(frame, labels)
    long = pd.DataFrame({"label": lists, "year": frame["year"].astype("Float64")})
    long = long.explode("label").dropna(subset=["label", "year"])
    out = long.groupby("label")["year"].agg(["mean", "std", "size"]).rename(
        columns={"size": "tracks"})
    out = out.astype({"mean": "float64", "std": "float64"})
    out.index.name = labels
    return out.sort_values("mean", ascending=False)


def labels_per_track(frame: pd.DataFrame, labels: str = DEFAULT_LABELS) -> pd.Series:
    """How many tracks carry 0, 1, 2, ... labels (the mean is ``.attrs['mean']``)."""
    n = label_lists(frame, labels).map(len)
    out = n.value_counts().sort_index()
    out.index.name, out.name = "labels", "tracks"
    out.attrs["mean"] = float(n.mean()) if len(n) else 0.0
    return out


def class_selection(frame: pd.DataFrame, min_tracks: int,
                    labels: str = DEFAULT_LABELS) -> pd.DataFrame:
    """Which classes survive a threshold of ``min_tracks`` tracks, and what balancing keeps.

    Per label: ``tracks``, ``tiles``, ``kept`` (``tracks >= min_tracks``) and ``balanced_tiles``:
    a class-balanced training set draws the same number of tiles from every kept class, the
    smallest kept class's tile count, so that is what each kept class keeps (0 for dropped
    ones). ``.attrs`` holds ``per_class``, ``kept_classes``, ``tiles_kept`` and
    ``tiles_available`` (tiles of kept classes before balancing, counted once per class).
    """
    table = membership(frame, labels)[["tracks", "tiles"]].copy()
    table["kept"] = table["tracks"] >= min_tracks
    kept_tiles = table.loc[table["kept"], "tiles"]
    per_class = int(kept_tiles.min()) if len(kept_tiles) else 0
    table["balanced_tiles"] = np.where(table["kept"], per_class, 0)
    table.attrs.update(per_class=per_class, kept_classes=int(table["kept"].sum()),
                       tiles_kept=per_class * int(table["kept"].sum()),
                       tiles_available=int(kept_tiles.sum()))
    return table
