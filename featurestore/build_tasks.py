"""What a build task does on a Dask worker: extract a batch of tracks, then write its tiles.

A batch's tiles stay in the worker's memory between the two steps; the driver only sees how
many there are, hands out a chunk-aligned region, and the write runs where the tiles are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from featurestore.extract import TrackResult, extract_track
from featurestore.spec import FeatureSpec
from featurestore.tile_arrays import Moments, TileArrays


@dataclass(frozen=True)
class TrackTask:
    """One track to build: its key, audio path, and the content hash of its stored build (if
    any), so that a touched but unchanged file is recognized without decoding."""

    track_id: str
    path: str
    known_hash: str | None = None


@dataclass
class TrackMeta:
    """A :class:`TrackResult` without its tiles: what the driver needs to commit."""

    status: str
    error: str
    n_tiles: int
    content_hash: str
    duration_s: float
    source_rate: int
    channels: int
    unchanged: bool


#: What extracts one track: ``(path, spec, storage_options, known_hash) -> TrackResult | None``,
#: with the contract of :func:`~featurestore.extract.extract_track`.
Extractor = Callable[[str, FeatureSpec, "dict | None", "str | None"], "TrackResult | None"]


def extract_batch(tasks: list[TrackTask], spec: FeatureSpec, storage_options: dict | None,
                  extract: Extractor = extract_track) -> list[TrackResult | None]:
    """Extract every track of a batch with ``extract`` (the study's extraction unless a
    benchmark stands in for it); ``None`` marks a track whose content is unchanged."""
    return [extract(t.path, spec, storage_options, t.known_hash) for t in tasks]


def batch_meta(results: list[TrackResult | None]) -> list[TrackMeta]:
    """The small part of a batch's results, sent back to the driver."""
    out = []
    for r in results:
        if r is None:
            out.append(TrackMeta("", "", 0, "", 0.0, 0, 0, True))
        else:
            out.append(TrackMeta(r.status, r.error, len(r.tiles), r.content_hash, r.duration_s,
                                 r.source_rate, r.channels, False))
    return out


def write_batch(results: list[TrackResult | None], region_start: int,
                old_ranges: list[tuple[int, int] | None], tiles_url: str,
                storage_options: dict | None, shape: tuple[int, int]) -> tuple[Moments, Moments]:
    """Write a batch's tiles at ``region_start`` (the task owns the region's chunks).

    Returns the moments of the tiles written and of the tiles they replace (``old_ranges``:
    each track's previously live tiles), so the driver keeps the feature set's statistics exact.
    """
    arrays = TileArrays.open(tiles_url, storage_options, read_only=False)
    built = [r.tiles for r in results if r is not None and len(r.tiles)]
    tiles = np.concatenate(built) if built else np.zeros((0, *shape), dtype=np.float32)
    entries, offsets, cursor = [], [], region_start
    for r in results:
        if r is not None and len(r.tiles):
            entries.append(np.full(len(r.tiles), cursor, dtype=np.int64))
            offsets.append(np.arange(len(r.tiles), dtype=np.int32))
            cursor += len(r.tiles)
    if built:
        arrays.write_region(region_start, tiles, np.concatenate(entries), np.concatenate(offsets))
    replaced = [rng for r, rng in zip(results, old_ranges) if r is not None and rng is not None]
    old = Moments.of(arrays.read_ranges(replaced), shape) if replaced else Moments.zeros(shape)
    return Moments.of(tiles, shape), old
