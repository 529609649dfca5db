"""``evaluate``: a model's committed scores against the catalog's labels, on a split of its
tracks, at tile level and at track level, as the study reports them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from featurestore.store import Store
from scoring.rankings import model_scores
from scoring.score_tables import KEY, scores_matrix
from training.metrics import DEFAULT_TOP_K, per_class, ranking_metrics
from training.model_files import ModelFiles
from training.targets import multi_hot

SPLITS = ("test", "val", "train", "all")


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

    def to_dict(self) -> dict:
        return {"model": self.model, "version": self.version, "split": self.split,
                "classes": self.classes, "k": self.k, "track": self.track, "tile": self.tile}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

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
        return "\n".join(lines)


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


def evaluate(store: Store | str, model: str, split: str = "test", k: int = DEFAULT_TOP_K,
             version: str | None = None, storage_options: dict | None = None) -> Evaluation:
    """Evaluate the committed scores of ``model`` on its ``split`` tracks (the split saved with
    the model: test, val, train or all). Track truth is the catalog's label column; a tile's
    truth is its track's. Every track of the split needs a current score: run ``score``
    first."""
    store = store if isinstance(store, Store) else Store(store, storage_options)
    files = ModelFiles(store, model)
    config = files.read_complete_config()
    table = model_scores(store, model, version)
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
    track = {**ranking_metrics(truth, scores), "per_class": per_class(truth, scores, classes, k)}

    tiles = table.tiles(rankings.drop_duplicates(KEY))
    tile_scores = np.stack(tiles["scores"].to_numpy()).astype(np.float32)
    position = pd.MultiIndex.from_frame(keys).get_indexer(
        pd.MultiIndex.from_frame(tiles[KEY]))
    tile_truth = truth[position]
    tile = {**ranking_metrics(tile_truth, tile_scores),
            "per_class": per_class(tile_truth, tile_scores, classes, k)}
    return Evaluation(model, table.version, split, classes, track["per_class"]["k"], track,
                      tile, truth, scores)
