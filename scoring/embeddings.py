"""Track embeddings: what each model's embedding is, reading the committed ones (current tracks
only), and embedding a reference file that is not in the library.

Scoring writes one embedding per track beside the rankings (:mod:`scoring.embedding_files`);
similarity search (:mod:`scoring.similarity`) compares them by cosine.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from featurestore.spec import FeatureSpec
from featurestore.statuses import OK
from featurestore.store import Store
from scoring.rankings import SHOWN, model_scores, scored_tracks
from scoring.score_tables import KEY, ScoreTable
from training.model_files import ModelFiles

#: What a track's embedding is, per architecture (recorded in the version's ``version.json``).
EMBEDDINGS = {
    "dnn": "mean over the track's tiles of the last hidden layer",
    "cnn": "mean over the track's tiles of the last hidden layer",
    "multilabel": "mean over the track's tiles of the last hidden layer",
    "ensemble": "mean over the track's tiles of the members' last hidden layers, concatenated",
    "linear": "standardized per-track feature statistics (mean and std of every row)",
    "kernel": "standardized per-track feature statistics and the label scores, each of unit "
              "length, the scores weighted 4",
    "pooled": "the pooled track embedding (mean and max over tiles of the tile encoder)",
}

#: What a ``kernel`` model with a codebook (``training.codebook``) adds to its embedding.
CODEBOOK = (", then the track's frame-codebook word shares (square roots, folded by a signed "
            "hashing, unit length) weighted by half the rest's length")


def embedding_kind(config: dict) -> str:
    """What the embeddings of the model of ``config`` (its ``model.json``) are, in words."""
    return EMBEDDINGS[config["arch"]] + (CODEBOOK if config.get("codebook") else "")


def current_embeddings(store: Store, table: ScoreTable, filters: dict | None = None,
                       columns: list[str] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The committed embeddings of tracks built and unchanged since they were scored (a stale
    embedding is never served), narrowed by ``filters`` as :meth:`Store.tracks`: their rows
    (``catalog``, ``track_id``, then the catalog ``columns``, default title, film, composer,
    year and genres) and their ``(tracks, size)`` float32 matrix, in the same order."""
    info = table.info()
    keys, matrix = table.embeddings([*KEY, "content_hash"])
    tracks = scored_tracks(store, info.feature_set, filters)
    shown = [c for c in (SHOWN if columns is None else columns) if c in tracks.columns]
    rows = keys.reset_index().merge(tracks[[*KEY, "content_hash", *shown]],
                                    on=[*KEY, "content_hash"])
    order = rows["index"].to_numpy()
    return rows.drop(columns=["index", "content_hash"]).reset_index(drop=True), matrix[order]


def embeddings(store: Store, model: str, version: str | None = None,
               **filters) -> pd.DataFrame:
    """The current track embeddings of ``model`` (its current version unless ``version``):
    one row per track with ``catalog``, ``track_id``, ``embedding`` (a float32 array) and the
    track's title, film, composer, year and genres. ``filters`` narrow the tracks as
    :meth:`Store.tracks` does."""
    rows, matrix = current_embeddings(store, model_scores(store, model, version), filters)
    return rows.assign(embedding=list(matrix))


def audio_embedding(store: Store, model: str, path: str, version: str | None = None,
                    storage_options: dict | None = None, device: str = "cpu") -> np.ndarray:
    """The embedding of an audio file that need not be in the library: its tiles extracted
    with the model's feature spec, embedded as scoring embeds a track. ``version``: the
    scored version the result will be compared with, which must be the model's current one
    (the file is embedded with the model's current weights). Raises ``ValueError`` naming the
    file when it cannot be read or is shorter than one tile."""
    # Extraction (scipy, librosa) and the model (torch) only when a file is embedded: a
    # search from a library track reads committed embeddings and loads neither.
    from featurestore.extract import extract_track
    from scoring.score_tasks import ready_to_score, track_outputs
    from training.inference import resolve_device

    files = ModelFiles(store, model)
    config = files.read_complete_config()
    if version is not None and version != files.version():
        raise ValueError(f"a reference file is embedded with model {model!r}'s current "
                         f"version {files.version()}, not version {version}; score the model "
                         "(`featurestore score`) and search its current version")
    spec = FeatureSpec.from_dict(config["spec"])
    result = extract_track(path, spec, storage_options)
    if result.status != OK:
        raise ValueError(f"reference audio {path}: {result.status}: {result.error}")
    counts = np.array([len(result.tiles)], dtype=np.int64)
    device = resolve_device(device)
    _, _, vectors = track_outputs(ready_to_score(files.load_model(config), device),
                                  result.tiles, counts, bool(config["softmax"]), device)
    return vectors[0]
