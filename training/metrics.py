"""Metrics of label rankings, as the study reports them, from scikit-learn: for a trained
model's held-out tiles and tracks (training) and for committed scores (scoring's evaluation)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from training.samplers import TileTable

#: The study takes each track's top 5 labels as its predictions for the per-class report.
DEFAULT_TOP_K = 5


def ranking_metrics(truth: np.ndarray, scores: np.ndarray) -> dict:
    """LRAP, coverage error with its lower bound (the mean number of true labels: a perfect
    ranking's coverage) and label ranking loss, over the rows with at least one true label."""
    # scikit-learn is imported by the functions that use it: scoring and the rankings
    # queries import this module, and most of their runs compute no metric
    from sklearn.metrics import (coverage_error, label_ranking_average_precision_score,
                                 label_ranking_loss)

    keep = truth.sum(1) > 0
    truth, scores = truth[keep], scores[keep]
    if not len(truth):
        raise ValueError("no sample has any of the model's labels: nothing to evaluate")
    return {"lrap": float(label_ranking_average_precision_score(truth, scores)),
            "coverage_error": float(coverage_error(truth, scores)),
            "coverage_lower_bound": float(truth.sum(1).mean()),
            "label_ranking_loss": float(label_ranking_loss(truth, scores)),
            "samples": int(len(truth))}


def average_precision(relevant: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score`` of boolean ``relevant`` (some true) by
    ``scores``: the precision at each distinct score, weighted by the share of the relevant
    samples it adds (tied samples enter together). Written out because importing
    scikit-learn takes about 2 s, most of a ``rankings --label`` query; a test holds it to
    scikit-learn's."""
    order = np.argsort(scores, kind="stable")[::-1]
    ranked, hits = np.asarray(scores)[order], np.asarray(relevant)[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # each distinct score's end
    found = np.cumsum(hits)[last]
    return float((np.diff(found, prepend=0) / found[-1] * (found / (last + 1))).sum())


def ranking_precision(relevant: np.ndarray, scores: np.ndarray) -> dict:
    """How well ``scores`` rank the ``relevant`` samples above the rest: ``average_precision``
    (scikit-learn's, :func:`average_precision`; ``None`` unless some samples are relevant and
    some not), ``positives``, ``samples`` and ``chance`` (the share relevant: the expected
    average precision of a random order)."""
    relevant = np.asarray(relevant) > 0
    n, positives = len(relevant), int(relevant.sum())
    ap = average_precision(relevant, scores) if 0 < positives < n else None
    return {"average_precision": ap, "positives": positives, "samples": int(n),
            "chance": positives / n if n else None}


def label_precision(truth: np.ndarray, scores: np.ndarray, classes: list[str]) -> dict:
    """Per class, how well its column of ``scores`` ranks the samples that have it first
    (:func:`ranking_precision`): what a ranking of tracks for one label is worth. ``mean``:
    the mean average precision over the classes that have one, and ``chance``: theirs."""
    out = {c: ranking_precision(truth[:, i], scores[:, i]) for i, c in enumerate(classes)}
    measured = [r for r in out.values() if r["average_precision"] is not None]
    return {"classes": out,
            "mean": float(np.mean([r["average_precision"] for r in measured])) if measured
            else None,
            "chance": float(np.mean([r["chance"] for r in measured])) if measured else None}


def unmeasurable_label_ap(tracks: str) -> str:
    """Why no label's ranking of ``tracks`` (e.g. ``"test tracks"``) has an average precision:
    each label is on all of them or on none."""
    return f"label AP not measurable (no label is on some of the {tracks} and off the others)"


def held_out_metrics(scores: np.ndarray, table: TileTable,
                     track_scores: np.ndarray | None = None) -> dict:
    """Tile- and track-level LRAP and coverage error of a model's tile ``scores`` on the
    held-out tiles of ``table`` (a track's score: ``track_scores``, one row per track of the
    table in order, from a track-level model; else the mean of its tiles), and the mean over
    labels of each label's ranking of the tracks (:func:`label_precision`) with its chance."""
    tracks = (pd.DataFrame(scores).groupby(table.track).mean() if track_scores is None
              else pd.DataFrame(track_scores, index=np.unique(table.track)))
    track_truth = table.targets[tracks.index.to_numpy()]
    tile = ranking_metrics(table.labels, scores)
    track = ranking_metrics(track_truth, tracks.to_numpy())
    ranked = label_precision(track_truth, tracks.to_numpy(), list(range(track_truth.shape[1])))
    return {"tile_lrap": tile["lrap"], "tile_coverage_error": tile["coverage_error"],
            "track_lrap": track["lrap"], "track_coverage_error": track["coverage_error"],
            "track_label_ap": ranked["mean"], "track_label_ap_chance": ranked["chance"],
            "mean_labels": float(track_truth.sum(1).mean()),
            "test_tracks": len(tracks), "test_tiles": len(table)}


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Binary predictions: each row's ``k`` best-scored labels (ties by label order)."""
    k = min(k, scores.shape[1])
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    out = np.zeros(scores.shape, dtype=np.int8)
    np.put_along_axis(out, best, 1, axis=1)
    return out


def per_class(truth: np.ndarray, scores: np.ndarray, classes: list[str],
              k: int = DEFAULT_TOP_K) -> dict:
    """Precision, recall, F1 and support of each class with the top ``k`` labels taken as
    predictions, and their micro, macro and weighted averages."""
    from sklearn.metrics import precision_recall_fscore_support

    predicted = top_k(scores, k)
    truth = (truth > 0).astype(np.int8)
    p, r, f, s = precision_recall_fscore_support(truth, predicted, zero_division=0)
    out = {"k": int(min(k, scores.shape[1])),
           "classes": {c: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                           "support": int(s[i])} for i, c in enumerate(classes)}}
    for average in ("micro", "macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(truth, predicted, average=average,
                                                     zero_division=0)
        out[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
    return out
