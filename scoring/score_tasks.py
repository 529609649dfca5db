"""What a scoring task does on a Dask worker.

The model is loaded once per worker process and kept (tasks only name it); a task reads its
batch's tiles chunk by chunk (a tile model's in pieces of :data:`PIECE_TILES`, the next read
ahead in threads while the current one scores), scores them in mini-batches on the worker's
device (CUDA when it has one), aggregates them per track, and writes its tile scores, staged
rankings and track embeddings into the store (see :mod:`scoring.score_tables`). Only a small summary returns to
the driver.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from featurestore.errors import StoreError
from featurestore.store import Store
from featurestore.tile_arrays import TileSource, read_pieces, read_tiles, tile_rows
from scoring.aggregate import aggregate, ranking_rows
from scoring.embedding_files import embedding_bytes
from scoring.score_tables import ScoreTable
from training.fused import FusedEnsemble
from training.inference import autocast, place, probabilities, resolve_device
from training.model_files import ModelFiles
from training.models import Ensemble


@dataclass(frozen=True)
class ScoreJob:
    """Everything a task needs besides its tracks: which model version, where, and how."""

    store_url: str
    model: str
    version: str
    feature_set: str
    tiles_url: str
    classes: tuple[str, ...]
    softmax: bool
    aggregate: str
    run_id: str
    device: str = "auto"
    batch_size: int | None = None
    mixed_precision: bool = True
    storage_options: dict = field(default_factory=dict)


#: Per process: the loaded model, its device, and its cross-fitted scores
_MODELS: dict[tuple, tuple[nn.Module, torch.device, dict]] = {}
#: Tiles a scoring task reads as one piece, the next piece read while this one scores.
PIECE_TILES = 8192


def loaded_model(job: ScoreJob) -> tuple[nn.Module, torch.device, dict, bool]:
    """The job's model on this process's device, loaded on first use (as
    :func:`ready_to_score` runs it), with the cross-fitted scores of the tracks it was
    fitted on (:meth:`~training.model_files.ModelFiles.cross_fitted_scores`);
    ``(model, device, cross_fitted, loaded_now)``."""
    key = (job.store_url, job.model, job.version, job.device)
    if key in _MODELS:
        return (*_MODELS[key], False)
    files = ModelFiles(Store(job.store_url, job.storage_options), job.model)
    if files.version() != job.version:
        raise StoreError(f"model {job.model!r} changed while being scored (version "
                         f"{files.version()}, not {job.version}); run the scoring again")
    device = resolve_device(job.device)
    _MODELS.clear()  # one model at a time per worker: memory stays bounded
    _MODELS[key] = (ready_to_score(files.load_model(), device), device,
                    files.cross_fitted_scores())
    return (*_MODELS[key], True)


def ready_to_score(model: nn.Module, device: torch.device) -> nn.Module:
    """A loaded model (:meth:`~training.model_files.ModelFiles.load_model`) as scoring runs
    it on ``device``: on CUDA an ensemble as one :class:`~training.fused.FusedEnsemble` (all
    members in one grouped pass); otherwise the model placed channels-last (an ensemble's
    members one after another, 1.16x the fused module's rate on a CPU thread)."""
    if isinstance(model, Ensemble) and device.type == "cuda":
        return FusedEnsemble(list(model.members)).eval().to(device)
    return place(model, device)


def default_batch_size(device: torch.device) -> int:
    """Tiles per forward pass: small on a CPU (activations stay in cache: 16 tiles score 5x
    faster than 512 on one core), large on a GPU."""
    return 16 if device.type == "cpu" else 1024


def score_tiles(model: nn.Module, tiles: np.ndarray, softmax: bool, device: torch.device,
                batch_size: int | None = None, mixed_precision: bool = True,
                hidden: bool = False):
    """Probabilities ``(tiles, classes)``: softmax or per-class sigmoid of the logits (the
    model placed on ``device`` with :func:`training.inference.place`). With ``hidden`` (tile
    models), ``(probabilities, last hidden layer)`` from the same passes."""
    batch_size = batch_size or default_batch_size(device)
    out: list = []
    with torch.inference_mode():
        for start in range(0, len(tiles), batch_size):
            x = torch.from_numpy(tiles[start:start + batch_size])[:, None]
            out.append(probabilities(model, x, softmax, device, mixed_precision, hidden))
    if not hidden:
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)
    if not out:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([p for p, _ in out]), np.concatenate([h for _, h in out])


def score_tracks(model: nn.Module, tiles: np.ndarray, counts: np.ndarray, device: torch.device,
                 mixed_precision: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Track probabilities ``(tracks, classes)`` and track embeddings of a track-level model
    (``track_level``: ``linear``, ``kernel``, ``pooled``) from all of each track's tiles,
    stored track after track."""
    with torch.inference_mode():
        x = place(torch.from_numpy(tiles)[:, None], device)
        with autocast(device, mixed_precision):
            # counts copied (a few integers): a read-only array would make torch warn
            logits, embedding = model.track_outputs(
                x, torch.tensor(np.asarray(counts), dtype=torch.int64, device=device))
    return logits.float().sigmoid().cpu().numpy(), embedding.float().cpu().numpy()


def track_outputs(model: nn.Module, tiles: np.ndarray | Iterable[np.ndarray],
                  counts: np.ndarray, softmax: bool, device: torch.device, how: str = "mean",
                  batch_size: int | None = None, mixed_precision: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What scoring computes of tracks stored track after track (``counts`` tiles each):
    ``(tile scores, track scores, track embeddings)``. ``tiles``: one array, or pieces of it in
    order (each scored as it comes, so reading the next overlaps). A tile model's track scores
    aggregate its tile scores (``how``) and its embedding is the mean of its tiles' last hidden
    layer; a track-level model gives both from all of a track's tiles."""
    if getattr(model, "track_level", False):  # the model pools its tiles itself
        if not isinstance(tiles, np.ndarray):
            tiles = np.concatenate(list(tiles))
        tile_scores = score_tiles(model, tiles, softmax, device, batch_size, mixed_precision)
        track_scores, embeddings = score_tracks(model, tiles, counts, device, mixed_precision)
        return tile_scores, track_scores, embeddings
    pieces = [score_tiles(model, piece, softmax, device, batch_size, mixed_precision,
                          hidden=True)
              for piece in ([tiles] if isinstance(tiles, np.ndarray) else tiles)]
    tile_scores, hidden = (np.concatenate(parts) for parts in zip(*pieces)) if pieces else (
        np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32))
    return (tile_scores, aggregate(tile_scores, counts, how),
            aggregate(hidden, counts, "mean"))


def score_batch(tracks: list[dict], batch: int, job: ScoreJob) -> dict:
    """Score one batch of ``ok`` tracks (dicts of catalog, track_id, content_hash,
    tile_start, n_tiles) and write its files. Returns counts (tracks, those given their
    cross-fitted scores, tiles), seconds and whether this call loaded the model."""
    started = time.perf_counter()
    model, device, cross_fitted, loaded = loaded_model(job)
    frame = pd.DataFrame(tracks)
    counts = frame["n_tiles"].to_numpy(np.int64)
    index, offsets = tile_rows(frame["tile_start"].to_numpy(np.int64), counts)
    source = TileSource(job.tiles_url, job.storage_options)
    tiles = (read_tiles(source, index) if getattr(model, "track_level", False)
             else read_pieces(source, index, PIECE_TILES))
    tile_scores, track_scores, embeddings = track_outputs(
        model, tiles, counts, job.softmax, device, job.aggregate, job.batch_size,
        job.mixed_precision)
    # A track of the audio the model was fitted on (under its key or as a copy) ranks by
    # the cross-fitted scores: the model's own would be scores of data it learned.
    audio = frame["content_hash"].tolist()
    fitted = np.array([content in cross_fitted for content in audio], dtype=bool)
    for row in np.flatnonzero(fitted):
        track_scores[row] = cross_fitted[audio[row]]
    keys = frame[["catalog", "track_id", "n_tiles", "content_hash"]].assign(cross_fitted=fitted)
    lineage = {"model": job.model, "version": job.version, "feature_set": job.feature_set,
               "aggregate": job.aggregate, "run_id": job.run_id,
               "scored_at": pd.Timestamp.now(tz="UTC")}
    rankings = ranking_rows(keys, track_scores, list(job.classes)).assign(**lineage)
    tile_frame = pd.DataFrame({
        "catalog": np.repeat(frame["catalog"].to_numpy(object), counts),
        "track_id": np.repeat(frame["track_id"].to_numpy(object), counts),
        "offset": offsets.astype(np.int32), "tile": index,
        "scores": list(tile_scores), "run_id": job.run_id})
    table = ScoreTable(Store(job.store_url, job.storage_options), job.model, job.version)
    table.write_batch(job.run_id, batch, rankings, tile_frame,
                      embedding_bytes(keys, embeddings, lineage))
    return {"tracks": len(frame), "cross_fitted": int(fitted.sum()), "tiles": len(index),
            "seconds": time.perf_counter() - started, "loaded": loaded, "pid": os.getpid(),
            "device": str(device)}
