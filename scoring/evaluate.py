"""``evaluate``: a model's committed scores against the catalog's labels, on a split of its
tracks, at tile level and at track level, as the study reports them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from featurestore.errors import check_counts
from featurestore.statuses import OK
from featurestore.store import Store
from featurestore.tile_arrays import TileSource, read_tiles, tile_rows
from scoring.rankings import check_current, model_scores
from scoring.score_tables import KEY, ScoreTable, scores_matrix
from scoring.similarity import neighbour_figures
from training.metrics import (DEFAULT_TOP_K, label_precision, per_class, ranking_metrics,
                              unmeasurable_label_ap)
from training.model_files import CROSS_FITTED, ModelFiles
from training.targets import multi_hot

SPLITS = ("test", "val", "train", "all")
#: Neighbours per query in the similarity figures.
NEIGHBOURS = 10
#: Tiles read at once for the statistics baseline.
_STATS_TILES = 8192


@dataclass
class Evaluation:
    """The figures of one evaluation, and the track-level arrays its report plots."""

    model: str
    version: str
    split: str
    classes: list[str]
    k: int
    track: dict
    tile: dict
    truth: np.ndarray = field(repr=False)
    scores: np.ndarray = field(repr=False)
    #: ``{"embedding": figures, "statistics": figures}`` of :func:`similarity_figures`, or
    #: ``None`` (not asked for, or the version has no embeddings yet)
    similarity: dict | None = None
    #: How the version made track scores: an aggregate of tile scores, or ``pooled`` (a
    #: track-level model, from all of a track's tiles at once)
    aggregate: str = "mean"
    #: Whether the split holds tracks the model was fitted on whose track scores are their
    #: cross-fitted ones (``train``, ``val`` or ``all`` of a statistics model)
    cross_fitted: bool = False

    def to_dict(self) -> dict:
        return {"model": self.model, "version": self.version, "split": self.split,
                "classes": self.classes, "k": self.k, "aggregate": self.aggregate,
                "cross_fitted": self.cross_fitted,
                "track": self.track, "tile": self.tile, "similarity": self.similarity}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @property
    def split_tracks(self) -> str:
        """The evaluated tracks in words: ``test tracks``, or ``tracks`` for every side."""
        return "tracks" if self.split == "all" else f"{self.split} tracks"

    def summary(self) -> str:
        lines = [f"model {self.model!r} version {self.version}, {self.split} split: "
                 f"{self.track['samples']} tracks, {self.tile['samples']} tiles"]
        for level in ("track", "tile"):
            m = getattr(self, level)
            lines.append(f"  {level:5s} LRAP {m['lrap']:.3f}, coverage error "
                         f"{m['coverage_error']:.2f} (best possible "
                         f"{m['coverage_lower_bound']:.2f}), ranking loss "
                         f"{m['label_ranking_loss']:.3f}, top-{self.k} micro F1 "
                         f"{m['per_class']['micro']['f1']:.3f}")
        ranked = self.track["label_precision"]
        if ranked["mean"] is not None:
            each = ", ".join(f"{c} {format_figure(r['average_precision'])}"
                             for c, r in ranked["classes"].items())
            lines.append(f"  labels   tracks ranked for each label: mean average precision "
                         f"{ranked['mean']:.3f} (chance {ranked['chance']:.3f}); {each}")
        else:
            lines.append(f"  labels   {unmeasurable_label_ap(self.split_tracks)}")
        if self.similarity is not None:
            ours, base = self.similarity["embedding"], self.similarity["statistics"]
            lines.append(f"  similar  {ours['k']} nearest of {ours['library']} tracks for "
                         f"{ours['queries']} {self.split} tracks: same-film precision "
                         f"{format_figure(ours['same_film_precision'])} (feature "
                         f"statistics {format_figure(base['same_film_precision'])}), label "
                         f"overlap (Jaccard) {format_figure(ours['label_jaccard'])} "
                         f"({format_figure(base['label_jaccard'])})")
        return "\n".join(lines)


def format_figure(value: float | None) -> str:
    """A neighbour figure with three decimals; ``n/a`` when no query could count it."""
    return "n/a" if value is None else f"{value:.3f}"


def split_tracks_of(files: ModelFiles, split: str) -> pd.DataFrame:
    """``catalog, track_id`` of the model's ``split`` side (``all``: every side)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r}: choose one of {', '.join(SPLITS)}")
    sides = files.read_frame("split.parquet")
    chosen = sides if split == "all" else sides[sides["side"] == split]
    if not len(chosen):
        raise ValueError(f"model {files.name!r} has no {split} tracks (its sides: "
                         f"{', '.join(sorted(sides['side'].unique()))})")
    return chosen[KEY].reset_index(drop=True)


def statistics_baseline(store: Store, feature_set: str, tracks: pd.DataFrame) -> np.ndarray:
    """Per track of ``tracks`` (``catalog``, ``track_id``), the mean and standard deviation
    of every feature row over its frames, each column standardized over these tracks: the
    plain-features embedding similarity search is measured against."""
    from training.linear import statistics_of  # loads torch: only when the baseline is asked

    built = store.tracks(feature_set=feature_set, status=OK,
                         columns=["tile_start", "n_tiles"])
    rows = tracks[KEY].merge(built, on=KEY, how="left")
    if rows["n_tiles"].isna().any():
        missing = rows.loc[rows["n_tiles"].isna(), "track_id"].iloc[0]
        raise ValueError(f"track {missing!r} is not built in feature set {feature_set}")
    source = TileSource(store.feature_set(feature_set).tiles_url, store.storage_options)
    counts = rows["n_tiles"].to_numpy(np.int64)
    cut = np.cumsum(counts) // _STATS_TILES
    parts = []
    for batch in np.unique(cut):  # bounded memory: a batch of tracks' tiles at a time
        chosen = rows[cut == batch]
        index, _ = tile_rows(chosen["tile_start"].to_numpy(np.int64),
                             chosen["n_tiles"].to_numpy(np.int64))
        parts.append(statistics_of(read_tiles(source, index), chosen["n_tiles"].to_numpy()))
    return standardized(np.concatenate(parts) if parts else np.zeros((0, 0)))


def standardized(values: np.ndarray) -> np.ndarray:
    """Each column of ``values`` standardized over its rows (constant columns become 0)."""
    return (values - values.mean(0)) / np.maximum(values.std(0), 1e-12)


def similarity_figures(store: Store, table: ScoreTable, wanted: pd.DataFrame,
                       label_column: str, k: int = NEIGHBOURS) -> dict | None:
    """The neighbours the version's embeddings find for the ``wanted`` tracks among every
    current track (:func:`~scoring.similarity.neighbour_figures`), beside those cosine search
    on standardized feature statistics (:func:`statistics_baseline`) finds; ``None`` when the
    version has no embeddings yet."""
    from scoring.embeddings import current_embeddings

    rows, matrix = current_embeddings(store, table, columns=["film", label_column])
    if not len(rows):
        return None
    queries = rows.reset_index().merge(wanted[KEY], on=KEY)["index"].to_numpy()
    if len(queries) < len(wanted):
        raise ValueError(f"{len(wanted) - len(queries)} of the {len(wanted)} tracks have no "
                         "current embedding: run `featurestore score` first")
    films = rows["film"] if "film" in rows else pd.Series([None] * len(rows))
    labels = rows[label_column]
    baseline = statistics_baseline(store, table.info().feature_set, rows)
    return {"embedding": neighbour_figures(matrix, films, labels, queries, k),
            "statistics": neighbour_figures(baseline, films, labels, queries, k)}


def evaluate(store: Store | str, model: str, split: str = "test", k: int = DEFAULT_TOP_K,
             version: str | None = None, storage_options: dict | None = None,
             similarity: bool = True) -> Evaluation:
    """Evaluate the committed scores of ``model`` on its ``split`` tracks (the split saved with
    the model: test, val, train or all). Track truth is the catalog's label column; a tile's
    truth is its track's. Every track of the split needs a current score: run ``score``
    first. ``version`` must be the model's current one (default): the split is the current
    model's. With ``similarity``, also the neighbours the track embeddings find
    (:func:`similarity_figures`: the whole library is read once for the baseline)."""
    check_counts(k=k)
    store = store if isinstance(store, Store) else Store(store, storage_options)
    files = ModelFiles(store, model)
    config = files.read_complete_config()
    table = model_scores(store, model, version)
    check_current(table, files, "its split is gone with it, so it cannot be evaluated on its "
                                "own test tracks")
    classes = list(table.info().classes)
    wanted = split_tracks_of(files, split)
    tracks = store.tracks(feature_set=table.info().feature_set,
                          columns=[config["label_column"], "content_hash"])
    tracks = wanted.merge(tracks, on=KEY, how="left")
    rankings = table.rankings().merge(tracks[[*KEY, "content_hash"]],
                                      on=[*KEY, "content_hash"])
    keys, scores = scores_matrix(rankings, classes)
    missing = len(wanted) - len(keys)
    if missing:
        raise ValueError(f"{missing} of the {len(wanted)} {split} tracks of model {model!r} "
                         "have no current score (new or changed since scoring): run "
                         "`featurestore score` first")
    tracks = keys.merge(tracks, on=KEY, how="left")
    truth = multi_hot(tracks, classes, config["label_column"])
    track = {**ranking_metrics(truth, scores), "per_class": per_class(truth, scores, classes, k),
             "label_precision": label_precision(truth, scores, classes)}

    tiles = table.tiles(rankings.drop_duplicates(KEY))
    tile_scores = np.stack(tiles["scores"].to_numpy()).astype(np.float32)
    position = pd.MultiIndex.from_frame(keys).get_indexer(
        pd.MultiIndex.from_frame(tiles[KEY]))
    tile_truth = truth[position]
    tile = {**ranking_metrics(tile_truth, tile_scores),
            "per_class": per_class(tile_truth, tile_scores, classes, k)}
    near = (similarity_figures(store, table, keys, config["label_column"]) if similarity
            else None)
    cross = split != "test" and files.has(CROSS_FITTED)
    return Evaluation(model, table.version, split, classes, track["per_class"]["k"], track,
                      tile, truth, scores, near, table.info().aggregate, cross)
