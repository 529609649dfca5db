"""Fitting the track-level models, and ``auto``: choosing among them by cross-validation.

``auto`` splits the training side (training and validation tracks; the test tracks are never
seen) into ``folds`` folds by track (or by ``group_by``), fits every candidate on each fold's
rest and scores the fold, and keeps the candidate with the best mean validation LRAP. Every
candidate sees the same folds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import expit
from sklearn.metrics import label_ranking_average_precision_score
from torch import nn
from tqdm.auto import tqdm

from training.config import TRACK_LEVEL, TrainConfig, TrainingError
from training.linear import (ESTIMATORS, cross_fitted, fit_statistics_model, fold_splits,
                             to_module)
from training.loop import Checkpointer
from training.split import groups_among
from training.track_fit import fit_tracks, predict_tracks, tiles_of, track_set
from training.track_models import PooledCNN, StatisticsLayout


@dataclass
class TrackData:
    """Every usable track's tiles as one tensor ``(n, rows, frames)`` on the training device,
    track after track (``starts``, ``counts``), with the tracks' multi-hot ``targets`` and the
    feature set's ``kind`` (``mfcc`` or ``logmel``: the statistics models' choice of
    statistics) and the ``groups`` that inner validation holds out together (each track's
    ``group_by`` value, or its recording's copies: :func:`training.split.holdout_groups`;
    ``None``: every track alone)."""

    tiles: torch.Tensor
    starts: np.ndarray
    counts: np.ndarray
    targets: np.ndarray
    kind: str = "mfcc"
    groups: np.ndarray | None = None

    def groups_of(self, rows: np.ndarray) -> np.ndarray | None:
        """The groups of the tracks at ``rows`` (``None`` when they stand alone there:
        :func:`training.split.groups_among`)."""
        return groups_among(self.groups, rows)

    def subset(self, rows: np.ndarray):
        """The tracks at ``rows`` as a track set (starts, counts, targets)."""
        return track_set(self.starts[rows], self.counts[rows], self.targets[rows],
                         self.tiles.device)

    def tiles_of(self, rows: np.ndarray) -> torch.Tensor:
        """Every tile of the tracks at ``rows``, track after track."""
        s = self.subset(rows)
        return tiles_of(self.tiles, s.starts, s.counts)

    def statistics(self, rows: np.ndarray, layout: StatisticsLayout) -> np.ndarray:
        """The statistics of ``layout`` of the tracks at ``rows`` (what ``linear`` and
        ``kernel`` are fitted on)."""
        return layout.of(self.tiles_of(rows), self.subset(rows).counts).cpu().numpy()

    def tile_moments(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-value mean and standard deviation of the tiles of ``rows``."""
        x = self.tiles_of(rows).double()
        return x.mean(0).cpu().numpy(), x.std(0, unbiased=False).cpu().numpy()


_NO_CHECKPOINT = Checkpointer(save=lambda state: None, load=lambda: None)


def fit_track_model(config: TrainConfig, data: TrackData, train: np.ndarray, val: np.ndarray,
                    checkpoint: Checkpointer = _NO_CHECKPOINT, label: str = "",
                    progress: bool = False, on_epoch=None) -> tuple[nn.Module, list[dict]]:
    """Fit ``config.arch`` (``linear``, ``kernel`` or ``pooled``) on the tracks at rows
    ``train``, with ``val`` for its choices (early stopping of ``pooled``; the statistics models
    choose their regularization ``C`` by cross-validation on ``train`` and ``val`` together,
    then fit on both). Returns the model (eval mode) and its history rows."""
    tile_shape = tuple(data.tiles.shape[1:])
    n_classes = data.targets.shape[1]
    if config.arch in ESTIMATORS:
        started = time.perf_counter()
        both = np.concatenate([train, val])
        layout = StatisticsLayout.for_model(config.arch, data.kind, tile_shape[0])
        x = data.statistics(both, layout)
        pipeline, c, tried = fit_statistics_model(config.arch, x, data.targets[both],
                                                  config.seed, data.groups_of(both))
        row = {"member": label or config.arch, "epoch": 0, "train_loss": float("nan"),
               "val_loss": float("nan"), "val_lrap": tried[c], "C": c,
               "seconds": time.perf_counter() - started}
        # on the tiles' device, where it is validated and tested
        return to_module(pipeline, tile_shape, layout).to(data.tiles.device), [row]
    if config.arch != "pooled":
        raise TrainingError(f"{config.arch!r} is not a track-level architecture "
                            f"({', '.join(TRACK_LEVEL)})")
    torch.manual_seed(config.seed)  # the initial weights are part of what a seed fixes
    model = PooledCNN(tile_shape, n_classes, config.width)
    model.standardize.set(*data.tile_moments(train))
    history = fit_tracks(model, data.tiles, data.subset(train), data.subset(val), config,
                         checkpoint, label=label or "pooled", progress=progress,
                         on_epoch=on_epoch)
    return model.eval(), history


def cross_fitted_scores(config: TrainConfig, data: TrackData, rows: np.ndarray,
                        c: float, groups: np.ndarray | None = None) -> np.ndarray:
    """Probabilities ``(len(rows), classes)`` of the tracks at ``rows``, which a statistics
    model (``config.arch``, ``C`` = ``c``) was fitted on, each from a model fitted on the
    others only (:func:`~training.linear.cross_fitted`; ``groups``: the ``group_by`` value of
    each, held out together): what scoring gives them in place of the model's own scores of
    tracks it learned."""
    layout = StatisticsLayout.for_model(config.arch, data.kind, data.tiles.shape[1])
    logits = cross_fitted(config.arch, data.statistics(rows, layout), data.targets[rows], c,
                          seed=config.seed, groups=groups)
    return expit(logits).astype(np.float32)


def track_scores(model: nn.Module, data: TrackData, rows: np.ndarray,
                 config: TrainConfig) -> np.ndarray:
    """Probabilities ``(len(rows), classes)`` of the tracks at ``rows``."""
    return torch.sigmoid(predict_tracks(model, data.tiles, data.subset(rows), config)).cpu() \
        .numpy()


def folds_of(rows: np.ndarray, groups: np.ndarray | None, k: int,
             seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``k`` (fit, held-out) pairs of ``rows``, by track or by group, seeded
    (:func:`~training.linear.fold_splits`); too few tracks or groups for ``k`` folds raise."""
    if groups is None and len(rows) < k:
        raise TrainingError(f"{len(rows)} tracks on the training side cannot make {k} "
                            "folds; lower --folds")
    if groups is not None and len(np.unique(groups)) < k:
        raise TrainingError(f"{len(np.unique(groups))} groups on the training side cannot "
                            f"make {k} folds; lower --folds")
    return [(rows[a], rows[b]) for a, b in fold_splits(len(rows), k, seed, groups)]


def inner_split(rows: np.ndarray, val_size: float, seed: int,
                groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (train, val) split of ``rows`` for a fold's early stopping. With ``groups``
    (one per row), whole groups go to validation, shuffled, until it holds ``val_size`` of the
    rows, and at least one group stays for training (by row when all are one group)."""
    n_val = max(1, int(round(val_size * len(rows))))
    rng = np.random.default_rng(seed)
    if groups is None or len(np.unique(groups)) < 2:
        order = rng.permutation(rows)
        return order[n_val:], order[:n_val]
    names, group_of = np.unique(groups, return_inverse=True)
    taken = np.zeros(len(names), dtype=bool)
    sizes = np.bincount(group_of)
    for g in rng.permutation(len(names))[:-1]:  # the last stays for training
        if sizes[taken].sum() >= n_val:
            break
        taken[g] = True
    val = taken[group_of]
    return rng.permutation(rows[~val]), rng.permutation(rows[val])


def check_selection(config: TrainConfig, rows: np.ndarray, groups: np.ndarray | None
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The folds :func:`select` would cross-validate on, or the :class:`TrainingError` it
    would raise: run before anything is written (an ``overwrite`` keeps the old model)."""
    for arch in config.candidates:
        if arch not in TRACK_LEVEL:
            raise TrainingError(f"auto compares track-level models ({', '.join(TRACK_LEVEL)});"
                                f" train {arch!r} with --arch {arch}")
    return folds_of(rows, groups, config.folds, config.seed)


def select(config: TrainConfig, data: TrackData, rows: np.ndarray,
           groups: np.ndarray | None, log, done: dict | None = None,
           save: Callable[[dict], None] | None = None, progress: bool = False) -> dict:
    """Cross-validate ``config.candidates`` on the tracks at ``rows``; returns the selection
    (``best``, and per candidate the folds' LRAP, mean, spread and seconds).

    ``done``: per candidate, the folds an interrupted run measured (``{"lrap": [...],
    "seconds": [...]}``), which are not fitted again; the folds are seeded, so they are the
    same folds. ``save`` is called with every candidate's folds so far after each fold.
    ``progress``: a bar of the folds fitted, whose ETA says how long the selection has left."""
    folds = check_selection(config, rows, groups)
    done = {arch: {key: list(values) for key, values in folds_done.items()}
            for arch, folds_done in (done or {}).items()}
    out: dict = {"folds": config.folds, "by": config.group_by or "track", "candidates": {}}

    def after_fold():
        bar.update()
        if save is not None:
            save(done)

    with tqdm(total=len(folds) * len(config.candidates), unit="fold", desc="auto",
              disable=not progress, initial=sum(len(done.get(arch, {}).get("lrap", []))
                                                for arch in config.candidates)) as bar:
        for arch in config.candidates:
            bar.set_postfix_str(arch)
            scores, seconds = _cross_validate(config.resolved(arch), data, folds,
                                              done.setdefault(arch, {"lrap": [], "seconds": []}),
                                              after_fold)
            out["candidates"][arch] = {"lrap": scores, "mean": float(np.mean(scores)),
                                       "std": float(np.std(scores)), "seconds": seconds}
            with bar.external_write_mode():  # the line above the bar, not inside it
                log(f"auto: {arch} validation LRAP {np.mean(scores):.3f} +- "
                    f"{np.std(scores):.3f} over {len(folds)} folds ({seconds:.0f} s)")
    ranked = sorted(out["candidates"].items(), key=lambda kv: -kv[1]["mean"])
    out["best"] = ranked[0][0]
    if len(ranked) > 1:
        (a, sa), (b, sb) = ranked[0], ranked[1]
        out["reason"] = (f"{a} has the best mean validation LRAP over {len(folds)} folds: "
                         f"{sa['mean']:.3f} +- {sa['std']:.3f} against {b}'s "
                         f"{sb['mean']:.3f} +- {sb['std']:.3f}")
    else:
        out["reason"] = f"{ranked[0][0]} is the only candidate"
    return out


def _cross_validate(cfg: TrainConfig, data: TrackData, folds: list, measured: dict,
                    after_fold: Callable[[], object]) -> tuple[list[float], float]:
    """``cfg.arch`` fitted on each fold's rest and scored on the fold, from the first fold
    not yet in ``measured`` (which gains each result); its folds' LRAP and total seconds."""
    for k, (fit_rows, held) in enumerate(folds[len(measured["lrap"]):], len(measured["lrap"])):
        started = time.perf_counter()
        train, val = inner_split(fit_rows, cfg.val_size, cfg.seed + k,
                                 data.groups_of(fit_rows))
        model, _ = fit_track_model(cfg, data, train, val, label=f"{cfg.arch} fold {k + 1}")
        truth = data.targets[held]
        keep = truth.sum(1) > 0
        measured["lrap"].append(float(label_ranking_average_precision_score(
            truth[keep], track_scores(model, data, held, cfg)[keep])))
        measured["seconds"].append(time.perf_counter() - started)
        after_fold()
    return measured["lrap"], float(sum(measured["seconds"]))
