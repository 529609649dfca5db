"""The questions rankings answer: a track's labels, best first; and the tracks that best fit a
label or a combination of labels ("which cues fit Thriller + Sci-Fi?"), with their film,
composer and year beside them.

Only current scores are served: a track whose audio changed since it was scored, or that is no
longer built, drops out until the next scoring run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from catalogs.genres import normalize_genre
from catalogs.labels import label_lists
from featurestore.errors import check_counts
from featurestore.statuses import OK
from featurestore.store import Store
from scoring.score_tables import KEY, ScoreTable, score_table, scores, scores_matrix
from training.metrics import ranking_precision
from training.model_files import ModelFiles
from training.targets import multi_hot

#: Ways to combine several labels' scores into one: ``geomean`` (their geometric mean, the
#: default); ``mean``; ``min`` (the track must fit every label: its weakest score counts).
COMBINE = ("geomean", "mean", "min")

#: How ``best_tracks`` combines labels unless told: the geometric mean. A track must score well
#: on every label to rank high, where the mean lets one strong label carry a weak one. On the
#: game-score corpus it ranked the tracks having both labels of a pair above the rest better
#: than the mean for 21 to 25 of 27 pairs and reshuffles, with each feature set and model
#: measured (docs/scoring.md).
DEFAULT_COMBINE = "geomean"

SHOWN = ["title", "film", "composer", "year", "genres"]


def model_scores(store: Store, model: str, version: str | None = None) -> ScoreTable:
    """The score table of the model's current version (its files as they are now), or of
    ``version``; a clear error when it has no scores yet."""
    if version is None:
        version = ModelFiles(store, model).version()
    return score_table(store, model, version)


def scored_tracks(store: Store, feature_set: str, filters: dict | None = None,
                  columns: list[str] | None = None) -> pd.DataFrame:
    """The ``ok`` tracks of a model's feature set, narrowed by ``filters`` (those of
    :meth:`Store.tracks` but ``status`` and ``feature_set``, which a model's answers fix)."""
    fixed = sorted({"status", "feature_set"} & set(filters or {}))
    if fixed:
        raise TypeError(f"no {' or '.join(fixed)} filter here: a model's answers come from the "
                        "built tracks of its own feature set")
    return store.tracks(feature_set=feature_set, status=OK, columns=columns, **(filters or {}))


def _current(rankings: pd.DataFrame, tracks: pd.DataFrame) -> pd.DataFrame:
    """``rankings`` of ``tracks`` (:func:`scored_tracks`: built) unchanged since scoring,
    joined with their metadata."""
    shown = [c for c in SHOWN if c in tracks.columns]
    tracks = tracks[[*KEY, "content_hash", *shown]]
    return rankings.merge(tracks, on=[*KEY, "content_hash"])


def track_rankings(store: Store, model: str, track_id: str | list[str],
                   catalog: str | None = None, version: str | None = None) -> pd.DataFrame:
    """Every label of the given track(s) with its score and rank, best first
    (``cross_fitted``: the score is from the model fitted without the track, which the model
    itself was fitted on)."""
    table = model_scores(store, model, version)
    ids = [track_id] if isinstance(track_id, str) else list(track_id)
    rankings = table.rankings()
    rankings = rankings[rankings["track_id"].isin(ids)]
    if catalog is not None:
        rankings = rankings[rankings["catalog"] == catalog]
    out = _current(rankings, scored_tracks(store, table.info().feature_set))
    missing = sorted(set(ids) - set(out["track_id"]))
    if missing:
        raise ValueError(f"no current scores of model {model!r} for track(s) "
                         f"{_why_unscored(store, table, missing, catalog)}")
    out = out.sort_values([*KEY, "rank"], kind="stable").reset_index(drop=True)
    return out[[*KEY, "rank", "label", "score", "cross_fitted",
                *[c for c in SHOWN if c in out.columns], "version", "scored_at"]]


def _why_unscored(store: Store, table: ScoreTable, ids: list[str],
                  catalog: str | None) -> str:
    """``ids`` with why each has no current score: not in the store, its build's failure
    status, or built but new or changed since the last scoring run."""
    built = store.tracks(catalog=catalog, feature_set=table.info().feature_set,
                         columns=["status"]).drop_duplicates("track_id").set_index("track_id")
    said = []
    for track_id in ids:
        status = built["status"].get(track_id)
        said.append(f"{track_id} (" + (
            "not in the store" if status is None else
            "built, new or changed since the last scoring run" if status == OK else
            f"build status {status}: not scored") + ")")
    return ", ".join(said)


def _check_combine(combine: str) -> None:
    if combine not in COMBINE:
        raise ValueError(f"combine {combine!r}: choose one of {', '.join(COMBINE)}")


def combine_scores(matrix: np.ndarray, combine: str) -> np.ndarray:
    """``(tracks, labels)`` scores as one per track, combined as ``combine`` (one of
    :data:`COMBINE`)."""
    _check_combine(combine)
    if combine == "mean":
        return matrix.mean(1)
    if combine == "min":
        return matrix.min(1)
    return np.exp(np.log(np.clip(matrix, 1e-12, None)).mean(1))


def check_current(table: ScoreTable, files: ModelFiles, why: str) -> None:
    """Refuse ``table`` unless it holds the scores of the model's current version: the model's
    files (its split among them) are that version's. ``why``: what an older one cannot do."""
    current = files.version()
    if table.version != current:
        raise ValueError(f"version {table.version} of model {files.name!r} is not its current "
                         f"one ({current}): {why}")


@dataclass
class _LabelRead:
    """What a question about labels reads, once: the version's score ``table``, the
    ``labels`` as the model scores them, their committed ``rankings``, and the scored
    ``tracks`` the filters leave (every column)."""

    table: ScoreTable
    labels: list[str]
    rankings: pd.DataFrame
    tracks: pd.DataFrame


def _read_labels(store: Store, model: str, fit: list[str] | str, version: str | None,
                 filters: dict) -> _LabelRead:
    """The version's score table, ``fit`` as the labels the model scores ("sci-fi", "Science
    Fiction": the IMDB name, when that is what it scores; each once; an error naming the ones
    it does not score), those labels' committed rankings, and the tracks ``filters`` leave."""
    labels = list(dict.fromkeys([fit] if isinstance(fit, str) else fit))
    if not labels:
        raise ValueError("name at least one label")
    table = model_scores(store, model, version)
    classes = list(table.info().classes)
    labels = [label if label in classes else normalize_genre(label)[0] for label in labels]
    unknown = [label for label in labels if label not in classes]
    if unknown:
        raise ValueError(f"model {model!r} does not score {', '.join(unknown)} (its labels: "
                         f"{', '.join(classes)})")
    labels = list(dict.fromkeys(labels))
    rankings = scores(store, model, table.version, labels=labels,
                      columns=[*KEY, "label", "score", "cross_fitted", "content_hash"])
    return _LabelRead(table, labels, rankings,
                      scored_tracks(store, table.info().feature_set, filters))


def best_tracks(store: Store, model: str, fit: list[str], top: int = 20,
                combine: str = DEFAULT_COMBINE, version: str | None = None,
                **filters) -> pd.DataFrame:
    """The ``top`` tracks that best fit the labels ``fit`` together, best first: ``rank``,
    ``score`` (the labels' scores combined), one score column per label, ``cross_fitted``
    (the model was fitted on the track; its scores are from the model fitted without it) and
    the track's metadata. ``filters`` narrow the candidates as :meth:`Store.tracks` does (``film``,
    ``composer``, ``year``, ``where`` ...)."""
    _check_combine(combine)  # before any read
    check_counts(top=top)
    return _best(_read_labels(store, model, fit, version, filters), top, combine)


def label_answer(store: Store, model: str, fit: list[str], top: int = 20,
                 combine: str = DEFAULT_COMBINE, version: str | None = None,
                 **filters) -> tuple[pd.DataFrame, RankingQuality | None]:
    """:func:`best_tracks` and, for the model's current version, :func:`ranking_quality`
    (``None`` for a version a retrain has replaced: the model's split is its current
    version's), from one read of the scores and the tracks: what ``rankings --label``
    prints."""
    _check_combine(combine)
    check_counts(top=top)
    read = _read_labels(store, model, fit, version, filters)
    files = ModelFiles(store, model)
    quality = (_quality(files, read, combine) if read.table.version == files.version()
               else None)
    return _best(read, top, combine), quality


def _best(read: _LabelRead, top: int, combine: str) -> pd.DataFrame:
    """:func:`best_tracks` of what :func:`_read_labels` read."""
    labels = read.labels
    rankings = _current(read.rankings, read.tracks)
    if not len(rankings):
        return pd.DataFrame(columns=["rank", *KEY, "score", *labels, "cross_fitted", *SHOWN])
    keys, matrix = scores_matrix(rankings, labels)
    out = keys.assign(score=combine_scores(matrix, combine).astype(np.float32))
    for i, label in enumerate(labels):
        out[label] = matrix[:, i]
    meta = rankings.drop_duplicates(KEY)[[*KEY, "cross_fitted",
                                          *[c for c in SHOWN if c in rankings]]]
    out = out.merge(meta, on=KEY, how="left")
    out = out.sort_values(["score", *KEY], ascending=[False, True, True], kind="stable")
    out = out.head(top).reset_index(drop=True)
    out.insert(0, "rank", np.arange(1, len(out) + 1))
    return out


#: Fewer held-out tracks than this with (or without) the labels, and the summary calls the
#: figure rough: it would move a lot with which tracks happened to be held out.
ROUGH = 10


@dataclass
class RankingQuality:
    """What a ranking of tracks for ``labels`` (their scores combined as ``combine``) is worth:
    the same ranking of the labelled ``tracks`` whose scores come from a model not fitted on
    them (:func:`ranking_quality`), of which ``positives`` have every label.
    ``average_precision`` (``None`` when none or all of them have every label) is 1 when those
    come first, and ``chance`` (their share) for a random order."""

    model: str
    labels: list[str]
    combine: str
    tracks: int
    positives: int
    average_precision: float | None
    chance: float | None
    cross_fitted: int  # of the tracks, those ranked by cross-fitted scores

    def summary(self) -> str:
        which = " and ".join(self.labels)
        where = (f"{self.tracks} labelled track{'s' * (self.tracks != 1)} scored by a model "
                 f"not fitted on {'them' if self.tracks != 1 else 'it'}"
                 + (f" ({self.cross_fitted} by cross-fitting)" if self.cross_fitted else ""))
        if self.average_precision is None:
            return (f"held out: {where}, {self.positives} of them with {which}: nothing to "
                    "measure this ranking by")
        rough = (f"; a rough figure: only {self.positives} with and {self.tracks - self.positives}"
                 " without" if min(self.positives, self.tracks - self.positives) < ROUGH else "")
        return (f"held out: {where}, {self.positives} of them with {which}: this ranking's "
                f"average precision there is {self.average_precision:.3f} (a random order: "
                f"{self.chance:.3f}){rough}")

    def to_dict(self) -> dict:
        return asdict(self)


def ranking_quality(store: Store, model: str, fit: list[str] | str,
                    combine: str = DEFAULT_COMBINE, version: str | None = None,
                    **filters) -> RankingQuality:
    """How well :func:`best_tracks` ranks the tracks that have every label of ``fit`` first,
    measured where the truth is known and the model did not learn it: on the labelled tracks
    (any label in the model's label column) among those ``filters`` leave that the model was
    not fitted on (its test split, tracks added since, tracks with none of its classes) or
    ranks by cross-fitted scores, against the catalog's labels."""
    _check_combine(combine)
    read = _read_labels(store, model, fit, version, filters)
    files = ModelFiles(store, model)
    check_current(read.table, files, "what its rankings are worth is measured for the current "
                                     "version only")
    return _quality(files, read, combine)


def _quality(files: ModelFiles, read: _LabelRead, combine: str) -> RankingQuality:
    """:func:`ranking_quality` of what :func:`_read_labels` read, for the current version."""
    labels, rankings = read.labels, read.rankings
    label_column = files.read_complete_config()["label_column"]
    sides = files.read_frame("split.parquet")
    fitted = rankings[KEY].merge(sides, on=KEY, how="left")["side"].isin(["train", "val"])
    # the model's own score of audio it learned, under this key or as a copy in another catalog
    learned = (fitted.to_numpy() | rankings["content_hash"].isin(
        rankings.loc[fitted.to_numpy(), "content_hash"]).to_numpy()) & ~rankings[
        "cross_fitted"].fillna(False).to_numpy(bool)
    # every column, as best_tracks reads them: a catalog without the label column is allowed
    tracks = read.tracks
    if label_column not in tracks:  # the filters left only catalogs without it
        tracks = tracks.assign(**{label_column: None})
    # a track without any label is unlabelled, not a track without these
    tracks = tracks[label_lists(tracks, label_column).map(len).to_numpy() > 0]
    rankings = rankings[~learned].merge(tracks[[*KEY, "content_hash"]],
                                        on=[*KEY, "content_hash"])
    keys, matrix = scores_matrix(rankings, labels)
    truth = multi_hot(keys.merge(tracks, on=KEY, how="left"), labels, label_column).all(1)
    measured = ranking_precision(truth, combine_scores(matrix, combine))
    crossed = rankings.drop_duplicates(KEY)["cross_fitted"].fillna(False).sum()
    return RankingQuality(files.name, labels, combine, measured["samples"],
                          measured["positives"], measured["average_precision"],
                          measured["chance"], int(crossed))
