"""Deciding what a build must do: which tracks changed, which were removed, and the batches.

A track is skipped when its stored row has the same path and file fingerprint (size plus
modification time or ETag) as now: a rebuild with nothing to do reads no audio. A changed
fingerprint sends the track to a worker with its old content hash, so a touched but unchanged
file costs one hash and no decoding.
"""

from __future__ import annotations

import os
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field

import pandas as pd

from featurestore.build_tasks import TrackTask
from featurestore.statuses import DUPLICATE, OK, REMOVED
from featurestore.urls import filesystem, is_local, strip_file_scheme

#: Rough bytes per second of audio per container, to balance batches before decoding.
_BYTES_PER_SECOND = {".wav": 176_400, ".aif": 176_400, ".aiff": 176_400, ".flac": 100_000,
                     ".mp3": 24_000, ".ogg": 20_000, ".opus": 16_000}
_DEFAULT_BPS = 60_000
# Failures that a rerun should retry even when the file did not change.
_RETRY = {"error", REMOVED, "missing", DUPLICATE}


@dataclass(frozen=True)
class FileStat:
    fingerprint: str
    size: int


def stat_files(paths: list[str], storage_options: dict | None = None) -> dict[str, FileStat | None]:
    """Fingerprint every path; ``None`` for a missing file. Remote folders are listed once
    each (one request per folder, not per file)."""
    out: dict[str, FileStat | None] = {}
    remote: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        if is_local(path):
            try:
                st = os.stat(strip_file_scheme(path))
            except (FileNotFoundError, NotADirectoryError):
                out[path] = None
                continue
            out[path] = FileStat(f"{st.st_size}:{st.st_mtime_ns}", st.st_size)
        else:
            remote[posixpath.dirname(path)].append(path)
    for directory, members in remote.items():
        fs, dir_path = filesystem(directory, storage_options)
        try:
            listing = {posixpath.basename(i["name"].rstrip("/")): i
                       for i in fs.ls(dir_path, detail=True)}
        except FileNotFoundError:
            listing = {}
        for path in members:
            info = listing.get(posixpath.basename(path))
            if info is None or info.get("type") == "directory":
                out[path] = None
                continue
            stamp = next((str(info[k]) for k in ("ETag", "etag", "mtime", "LastModified",
                                                 "last_modified", "created") if k in info), "")
            out[path] = FileStat(f"{info.get('size', 0)}:{stamp}", int(info.get("size") or 0))
    return out


def duplicate_reason(first: str) -> str:
    return f"same file as track {first!r}, listed earlier in the catalog"


def estimate_seconds(path: str, size: int) -> float:
    ext = os.path.splitext(path)[1].lower()
    return size / _BYTES_PER_SECOND.get(ext, _DEFAULT_BPS)


@dataclass
class BuildPlan:
    """What one build of one catalog does."""

    to_build: list[TrackTask] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    #: track_id -> the earlier track_id whose row lists the same file
    duplicates: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    estimated_seconds: dict[str, float] = field(default_factory=dict)


def plan_build(catalog: str, tracks: pd.DataFrame, state: pd.DataFrame,
               stats: dict[str, FileStat | None], rebuild: bool = False) -> BuildPlan:
    """Compare a catalog with the stored manifest rows of that catalog."""
    plan = BuildPlan()
    mine = state[state["catalog"] == catalog].set_index("track_id")
    previous = mine.to_dict("index")
    first_of: dict[str, str] = {}
    for track_id, path in zip(tracks["track_id"], tracks["path"]):
        prev = previous.get(track_id)
        stat = stats.get(path)
        same_path = prev is not None and prev["path"] == path
        first = first_of.setdefault(path, track_id)
        if first != track_id:
            # Two ids for one file would put the same audio on both sides of a split.
            recorded = (same_path and not rebuild and prev["status"] == DUPLICATE
                        and prev["error"] == duplicate_reason(first))
            if recorded:
                plan.skipped.append(track_id)
            else:
                plan.duplicates[track_id] = first
            continue
        if stat is None:
            if not (same_path and prev["status"] == "missing") or rebuild:
                plan.missing.append(track_id)
            else:
                plan.skipped.append(track_id)
            continue
        if (not rebuild and same_path and prev["status"] not in _RETRY
                and prev["fingerprint"] == stat.fingerprint):
            plan.skipped.append(track_id)
            continue
        known = (prev["content_hash"] or None) if (
            prev is not None and same_path and not rebuild
            and prev["status"] not in _RETRY) else None
        plan.to_build.append(TrackTask(track_id, path, known))
        plan.estimated_seconds[track_id] = estimate_seconds(path, stat.size)
    listed = set(tracks["track_id"])
    plan.removed = [t for t, row in previous.items()
                    if t not in listed and row["status"] != REMOVED]
    return plan


def make_batches(tasks: list[TrackTask], seconds: dict[str, float], n_workers: int,
                 chunk_seconds: float, target_seconds: float | None = None,
                 max_tracks: int = 256, min_seconds: float = 60.0) -> list[list[TrackTask]]:
    """Group tracks into batches (tasks), longest tracks first.

    Longest first (catalog order among equals), so that a long track starts while the short
    ones are still there to balance it: a 60-minute track last in its catalog, run last, kept
    one worker busy alone after the others had finished. With ``target_seconds``, every batch
    holds about that much audio. Otherwise sizes are guided: each batch takes the remaining audio
    divided by twice the workers, between ``min_seconds`` and 8 chunks' worth. Early batches are
    large (few partly filled chunks, as every batch pads its last chunk); late ones are small,
    so workers finish together.
    """
    tasks = sorted(tasks, key=lambda t: -seconds[t.track_id])  # stable: catalog order among equals
    batches: list[list[TrackTask]] = []
    remaining = sum(seconds[t.track_id] for t in tasks)
    acc, target = 0.0, 0.0
    for task in tasks:
        if not batches or acc >= target or len(batches[-1]) >= max_tracks:
            target = target_seconds or min(max(remaining / (2 * n_workers), min_seconds),
                                           8 * chunk_seconds)
            batches.append([])
            acc = 0.0
        batches[-1].append(task)
        acc += seconds[task.track_id]
        remaining -= seconds[task.track_id]
    return batches


def files_of_other_catalogs(catalog: str, tracks: pd.DataFrame,
                            state: pd.DataFrame) -> dict[str, int]:
    """For a catalog the store does not hold yet: how many of its files each other catalog
    already has built (``{catalog: tracks}``, largest first). A catalog file exported under a
    new name each night would otherwise store the whole library again, silently."""
    if (state["catalog"] == catalog).any():
        return {}
    built = state[(state["status"] == OK) & state["path"].isin(set(tracks["path"]))]
    return built["catalog"].value_counts().to_dict()


def live_range(row: dict | None) -> tuple[int, int] | None:
    """``(tile_start, n_tiles)`` of a manifest row whose tiles are served, else ``None``."""
    if row is None or row.get("status") != OK or not int(row.get("n_tiles") or 0):
        return None
    return int(row["tile_start"]), int(row["n_tiles"])
