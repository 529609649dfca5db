"""The models on per-track summary statistics: ``linear`` (one-vs-rest logistic regression)
and ``kernel`` (one-vs-rest RBF support vector machines).

Strong models for small libraries. scikit-learn fits them; the fitted scaler and parameters
become a :class:`training.track_models.TrackLinear` or :class:`~training.track_models.TrackKernel`,
so the model is saved, scored, ranked and rescored like every other one.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import label_ranking_average_precision_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits
from torch import nn

from training.track_models import StatisticsLayout, TrackKernel, TrackLinear

#: Inverse regularization strengths tried on the validation tracks, per model.
C_GRID = {"linear": (0.01, 0.1, 1.0, 10.0), "kernel": (1.0, 3.0, 10.0, 30.0)}


@contextlib.contextmanager
def one_blas_thread():
    """The context of the scikit-learn fits. BLAS runs on one thread: their products are tiny
    (tracks x 80 statistics), and handing them to OpenBLAS threads costs far more than it
    computes (:func:`choose_c` on 60 tracks took 91 s with 2 OpenBLAS threads on a busy 2-core
    machine, 7 s with one). scikit-learn's warning about a class on every track or on none
    (a fold of a few films can have one) is silenced: such a class is scored as a constant
    (:func:`_constant_logit`)."""
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Label .* is present in all training examples",
                                UserWarning)
        yield


def statistics_of(tiles: np.ndarray, counts: np.ndarray,
                  layout: StatisticsLayout = StatisticsLayout()) -> np.ndarray:
    """``(tracks, layout.size(rows))`` statistics of each track's frames (by default mean and
    standard deviation per row), from ``(n, rows, frames)`` tiles stored track after track."""
    # the tiles are only read, so they are shared, not copied; the counts often come from a
    # Parquet column (pandas shares Arrow's read-only buffer, which torch warns about) and are
    # a few integers, so they are copied
    return layout.of(torch.from_numpy(tiles),
                     torch.tensor(np.asarray(counts), dtype=torch.int64)).numpy()


def logistic(c: float = 1.0) -> Pipeline:
    """The ``linear`` estimator: standardization, then one logistic regression per class."""
    return make_pipeline(StandardScaler(), OneVsRestClassifier(
        LogisticRegression(C=c, max_iter=5000)))


def kernel_svm(c: float = 3.0) -> Pipeline:
    """The ``kernel`` estimator: standardization, then one RBF support vector machine per
    class (``gamma`` 1 / features: on standardized statistics, scikit-learn's ``scale``)."""
    return make_pipeline(StandardScaler(), OneVsRestClassifier(SVC(C=c, kernel="rbf",
                                                                   gamma="auto")))


ESTIMATORS = {"linear": logistic, "kernel": kernel_svm}


def fold_splits(n: int, folds: int, seed: int = 0,
                groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Seeded ``(fit, held)`` row indices of ``folds`` folds over ``n`` rows. With ``groups``
    (a film, or a recording's copies, per row), whole groups are held out together; by row
    when there are fewer groups than folds."""
    if groups is not None and len(np.unique(groups)) >= folds:
        return list(GroupKFold(folds, shuffle=True, random_state=seed).split(
            np.zeros(n), groups=groups))
    return list(KFold(min(folds, n), shuffle=True, random_state=seed).split(np.zeros(n)))


def choose_c(arch: str, x: np.ndarray, y: np.ndarray, folds: int = 3,
             seed: int = 0, groups: np.ndarray | None = None
             ) -> tuple[float, dict[float, float]]:
    """The ``C`` of ``C_GRID[arch]`` with the best mean LRAP over ``folds``-fold
    cross-validation on ``x``, ``y`` (the smaller ``C`` on ties), and every candidate's mean:
    on small libraries one validation split is too few tracks to choose by. ``groups``: held
    out together (:func:`fold_splits`), so that copies of a recording do not make a weakly
    regularized model look better than it is."""
    splits = fold_splits(len(x), folds, seed, groups)
    scores = {}
    for c in C_GRID[arch]:
        per_fold = []
        for fit, held in splits:
            keep = y[held].sum(1) > 0
            if not keep.any() or (y[fit].sum(0) == 0).any():
                continue  # a fold without a class to learn or to rank says nothing
            with one_blas_thread():
                model = ESTIMATORS[arch](c).fit(x[fit], y[fit])
            per_fold.append(label_ranking_average_precision_score(
                y[held][keep], model.decision_function(x[held][keep])))
        scores[c] = float(np.mean(per_fold)) if per_fold else 0.0
    best = max(scores.values())
    return min(c for c, s in scores.items() if s == best), scores


def fit_statistics_model(arch: str, x: np.ndarray, y: np.ndarray, seed: int = 0,
                         groups: np.ndarray | None = None
                         ) -> tuple[Pipeline, float, dict[float, float]]:
    """The ``arch`` estimator fitted on ``x``, ``y`` with its ``C`` chosen by
    :func:`choose_c` (``groups`` held out together): ``(pipeline, C, every candidate's mean
    LRAP)``."""
    c, tried = choose_c(arch, x, y, seed=seed, groups=groups)
    with one_blas_thread():
        return ESTIMATORS[arch](c).fit(x, y), c, tried


#: Folds of :func:`cross_fitted`: each track scored by a model fitted on the other 4/5.
CROSS_FIT_FOLDS = 5


def cross_fitted(arch: str, x: np.ndarray, y: np.ndarray, c: float,
                 folds: int = CROSS_FIT_FOLDS, seed: int = 0,
                 groups: np.ndarray | None = None) -> np.ndarray:
    """Each row's ``decision_function`` from an ``arch`` estimator (``C`` = ``c``) fitted on
    the other folds only: the scores of the tracks a model was fitted on, as it would score
    them had it not seen them. With ``groups`` (a film per row, say), whole groups are held
    out together, as a split by group holds them out (by row when there are fewer groups than
    folds). A class that a fold's rest has on no row or on every row (nothing to learn from)
    is scored by the model fitted on every row, the only one that knows it."""
    out = np.zeros(y.shape, dtype=np.float64)
    everything = None
    with one_blas_thread():
        for fit, held in fold_splits(len(x), folds, seed, groups):
            positives = y[fit].sum(0)
            learnable = (positives > 0) & (positives < len(fit))
            if learnable.any():
                model = ESTIMATORS[arch](c).fit(x[fit], y[fit][:, learnable])
                # one class: scikit-learn gives a vector
                out[np.ix_(held, np.flatnonzero(learnable))] = model.decision_function(
                    x[held]).reshape(len(held), -1)
            if not learnable.all():
                if everything is None:
                    everything = ESTIMATORS[arch](c).fit(x, y)
                out[np.ix_(held, np.flatnonzero(~learnable))] = everything.decision_function(
                    x[held]).reshape(len(held), -1)[:, ~learnable]
    return out


def to_module(pipeline: Pipeline, tile_shape: tuple[int, int],
              layout: StatisticsLayout) -> nn.Module:
    """The pipeline, fitted on statistics of ``layout``, as a torch module whose logits equal
    its ``decision_function`` (for ``linear``, whose sigmoid equals ``predict_proba``)."""
    # the template, not a fitted class: one constant on the training side is no SVC
    if isinstance(pipeline.steps[1][1].estimator, SVC):
        return kernel_module(pipeline, tile_shape, layout)
    scaler, ovr = pipeline.steps[0][1], pipeline.steps[1][1]
    estimators = ovr.estimators_
    module = TrackLinear(tile_shape, len(estimators), layout)
    module.center.copy_(torch.from_numpy(scaler.mean_))
    module.scale.copy_(torch.from_numpy(scaler.scale_))
    for k, est in enumerate(estimators):
        if hasattr(est, "coef_"):
            module.coef[k] = torch.from_numpy(est.coef_[0])
            module.bias[k] = float(est.intercept_[0])
        else:
            module.bias[k] = _constant_logit(est)
    return module.eval()


def _constant_logit(estimator) -> float:
    """The logit of a class on every training track or on none, which scikit-learn predicts as
    a constant (its ``decision_function`` gives 0 or 1): nearly certain, not a coin toss."""
    p = float(np.clip(estimator.y_[0] if hasattr(estimator, "y_") else 0.5, 1e-6, 1 - 1e-6))
    return float(np.log(p / (1 - p)))


def kernel_module(pipeline: Pipeline, tile_shape: tuple[int, int],
                  layout: StatisticsLayout) -> TrackKernel:
    """A fitted :func:`kernel_svm` as a :class:`TrackKernel`: the union of the classes'
    support vectors, each class's dual coefficients on it (zero where not its own)."""
    scaler, ovr = pipeline.steps[0][1], pipeline.steps[1][1]
    machines = ovr.estimators_
    fitted = [m for m in machines if hasattr(m, "support_vectors_")]
    vectors = (np.unique(np.concatenate([m.support_vectors_ for m in fitted]), axis=0)
               if fitted else np.zeros((0, len(scaler.mean_))))
    module = TrackKernel(tile_shape, len(machines), len(vectors), layout)
    module.center.copy_(torch.from_numpy(scaler.mean_))
    module.scale.copy_(torch.from_numpy(scaler.scale_))
    module.support.copy_(torch.from_numpy(vectors))
    module.gamma.fill_(1.0 / len(scaler.mean_))  # gamma="auto"
    for k, m in enumerate(machines):
        if not hasattr(m, "support_vectors_"):
            module.bias[k] = _constant_logit(m)
            continue
        rows = [np.flatnonzero((vectors == v).all(1))[0] for v in m.support_vectors_]
        # SVC's decision function is positive for its second class (our positive label)
        module.coef[k, rows] = torch.from_numpy(m.dual_coef_[0])
        module.bias[k] = float(m.intercept_[0])
    return module.eval()
