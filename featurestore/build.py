"""The feature build: a catalog in, its tracks' tiles committed into the store, on Dask.

The driver (this process) validates the catalog, takes the store's writer lock, plans what
changed, and submits one extract task per batch of tracks. As a batch's tile counts come back it
hands out a chunk-aligned region of tile slots and submits the write, which runs on the worker
holding the tiles. When a write is done, the batch's rows and the feature set's updated
statistics are committed (see :mod:`featurestore.manifest`): only then are its tracks visible.
A build killed at any point leaves only whole, committed tracks, and the next build does the rest.
"""

from __future__ import annotations

import sys
import time
import uuid
from dataclasses import dataclass, field

import pandas as pd
from distributed import Client, as_completed
from tqdm.auto import tqdm

from catalogs.reader import Catalog, CatalogError, read_catalog
from featurestore import layout
from featurestore.build_tasks import (Extractor, TrackMeta, batch_meta, extract_batch,
                                      write_batch)
from featurestore.cluster import check_cluster_request, cluster_for
from featurestore.errors import check_counts
from featurestore.exit_codes import ExitCode
from featurestore.extract import extract_track
from featurestore.lock import WriterLock
from featurestore.manifest import SCHEMA, ManifestState
from featurestore.planning import (BuildPlan, duplicate_reason, files_of_other_catalogs,
                                   live_range, make_batches, plan_build, stat_files)
from featurestore.query import RESERVED_COLUMNS
from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.statuses import DUPLICATE, FAILURE_STATUSES, OK, REMOVED
from featurestore.store import FeatureSet, Store
from featurestore.tile_arrays import Moments, round_up

#: Seconds between commits while batches keep finishing (each commit is one small file, and the
#: manifest is compacted at the end); what a killed build loses is at most this much work.
COMMIT_INTERVAL_S = 1.0


@dataclass
class BuildReport:
    """What a build did. ``built``, ``failed``, ``refreshed`` and ``unchanged`` count the
    catalog's tracks by what this run did with them (extracted tiles; recorded a failure:
    a missing, duplicate or unreadable file; refreshed the fingerprint of a touched file; left
    alone). ``failures`` lists every track of the catalog whose current status is a failure
    (this run's and earlier unchanged ones), as (track_id, status, reason)."""

    catalog: str
    feature_set: str
    run_id: str
    n_tracks: int = 0
    built: int = 0
    failed: int = 0
    unchanged: int = 0
    refreshed: int = 0
    removed: int = 0
    audio_seconds: float = 0.0
    tiles_written: int = 0
    wall_seconds: float = 0.0
    commits: int = 0
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        """``TRACKS_FAILED`` when any track of the catalog failed, else ``OK``."""
        return ExitCode.TRACKS_FAILED if self.failures else ExitCode.OK

    def summary(self, max_failures: int = 20) -> str:
        lines = [
            f"catalog {self.catalog!r}, feature set {self.feature_set}, run {self.run_id}",
            f"  {self.n_tracks} track{'s' * (self.n_tracks != 1)}: {self.built} extracted, "
            f"{self.failed} failed, "
            f"{self.refreshed} touched but unchanged, {self.unchanged} skipped (up to date); "
            f"{self.removed} removed",
            f"  {self.audio_seconds / 3600:.3f} h of audio, {self.tiles_written} "
            f"tile{'s' * (self.tiles_written != 1)} written, {self.commits} "
            f"commit{'s' * (self.commits != 1)}, {self.wall_seconds:.1f} s",
        ]
        if self.built == 0 and self.failed == 0 and self.removed == 0 and self.refreshed == 0:
            # the catalog's metadata is written on every run: "nothing" is about the audio
            lines.append("  nothing to do: every track's tiles are up to date" + (
                " but for the failed tracks below" if self.failures else ""))
        if self.failures:
            n = len(self.failures)
            lines.append(f"  {n} track{' has' if n == 1 else 's have'} no tiles (failed in "
                         "this run or an earlier one), each with its reason:")
        for track_id, status, reason in self.failures[:max_failures]:
            lines.append(f"  FAILED {track_id}: {status}: {reason}")
        if len(self.failures) > max_failures:
            lines.append(f"  ... and {len(self.failures) - max_failures} more failures "
                         "(see `featurestore.open(store).tracks()`)")
        return "\n".join(lines)


class _Committer:
    """Accumulates finished rows and commits them as numbered manifest entries."""

    def __init__(self, fset: FeatureSet, state: ManifestState, run_id: str,
                 interval: float = COMMIT_INTERVAL_S):
        self.fset, self.run_id, self.interval = fset, run_id, interval
        self._frame = state.frame
        # Committed rows not yet merged into ``_frame``: merging at every commit cost time in
        # proportion to the tracks committed so far, once a second, on the driver.
        self._unmerged: list[pd.DataFrame] = []
        self.seq, self.high_water = state.seq, state.high_water
        self.moments = fset.read_moments(state.seq)
        self.rows: list[dict] = []
        self.delta = Moments.zeros(fset.spec.tile_shape)
        self.region_end = state.high_water
        self.last = time.monotonic()
        self.commits = 0

    def add(self, rows: list[dict], added: Moments, replaced: Moments, region_end: int) -> None:
        self.rows.extend(rows)
        self.delta = self.delta + added - replaced
        self.region_end = max(self.region_end, region_end)

    def commit(self, force: bool = False) -> None:
        if not self.rows or (not force and time.monotonic() - self.last < self.interval):
            return
        now = pd.Timestamp.now(tz="UTC")
        rows = pd.DataFrame(self.rows).assign(built_at=now, run_id=self.run_id, seq=self.seq + 1)
        rows = rows[SCHEMA.names]
        moments = self.moments + self.delta
        high = max(self.high_water, self.region_end)
        # Statistics first: a manifest entry must never exist without its statistics.
        self.fset.write_moments(self.seq + 1, moments)
        self.fset.manifest.append(rows, self.seq + 1, high)
        self.seq, self.high_water, self.moments = self.seq + 1, high, moments
        self._unmerged.append(rows)
        self.rows, self.delta = [], Moments.zeros(self.fset.spec.tile_shape)
        self.last = time.monotonic()
        self.commits += 1

    @property
    def frame(self) -> pd.DataFrame:
        """The committed state: one row per (catalog, track_id), the last committed."""
        if self._unmerged:
            self._frame = pd.concat([self._frame, *self._unmerged], ignore_index=True
                                    ).drop_duplicates(["catalog", "track_id"], keep="last")
            self._unmerged = []
        return self._frame

    def compact(self) -> None:
        state = ManifestState(self.frame.reset_index(drop=True), self.seq, self.high_water)
        self.fset.manifest.compact(state)
        self.fset.prune_moments(self.seq)


def _row(catalog: str, track_id: str, path: str, fingerprint: str, meta: TrackMeta | None,
         tile_start: int = -1, **overrides) -> dict:
    row = {"catalog": catalog, "track_id": track_id, "path": path, "fingerprint": fingerprint,
           "content_hash": "", "status": "", "error": "", "n_tiles": 0, "tile_start": tile_start,
           "duration_s": 0.0, "source_rate": 0, "channels": 0}
    if meta is not None:
        row.update(content_hash=meta.content_hash, status=meta.status, error=meta.error,
                   n_tiles=meta.n_tiles, duration_s=meta.duration_s,
                   source_rate=meta.source_rate, channels=meta.channels)
    row.update(overrides)
    return row


def _carried(prev: dict, **changes) -> dict:
    """A stored manifest row carried into a new commit: its commit columns are the new
    commit's."""
    row = {k: v for k, v in prev.items() if k not in ("built_at", "run_id", "seq")}
    row.update(changes)
    return row


def build(catalog: str | Catalog, store: str | Store, *, name: str | None = None,
          spec: FeatureSpec | None = None, encoding: TileEncoding | None = None,
          client: Client | None = None, scheduler: str | None = None,
          scheduler_file: str | None = None, n_workers: int | None = None,
          storage_options: dict | None = None, rebuild: bool = False,
          batch_seconds: float | None = None, commit_seconds: float = COMMIT_INTERVAL_S,
          progress: bool = True, log=None, extractor: Extractor = extract_track
          ) -> BuildReport:
    """Build (or bring up to date) the tiles of one catalog in a store.

    Parameters
    ----------
    catalog : str or Catalog
        Catalog file (path or URL) or an already read :class:`~catalogs.reader.Catalog`.
    store : str or Store
        Store URL (created if new) or an open :class:`Store`.
    name : str, optional
        Catalog name in the store (default: the catalog's own name, i.e. its file stem).
    spec, encoding : optional
        Feature spec (default: the study's) and tile encoding (used when the feature set is new).
    client, scheduler, scheduler_file, n_workers : optional
        A Dask client to use; else an address or scheduler file to connect to; else a
        LocalCluster of ``n_workers`` processes (default one per core). ``memory://`` stores
        run on a LocalCluster of threads, since they live in this process only.
    storage_options : dict, optional
        fsspec options for the store and the audio files (endpoint, credentials).
    rebuild : bool
        Extract every track again even if unchanged.
    batch_seconds : float, optional
        Audio seconds per task (default: sized from the library and the number of workers).
    commit_seconds : float
        Seconds between commits while batches finish (0: after every batch). Committed tracks
        are visible to readers and kept if the build is killed.
    progress : bool
        Show a progress bar of tracks and audio hours.
    extractor : callable
        What the workers run on each track (default :func:`featurestore.extract.extract_track`,
        whose signature and contract a replacement keeps). The scaling benchmark passes one that
        takes a measured time and returns real-shaped tiles, to run this driver, the scheduler
        and the store's commits at many more workers than the machine has cores.

    Returns
    -------
    BuildReport
        Its ``exit_code`` is ``ExitCode.OK``, or ``TRACKS_FAILED`` when tracks failed. A bad
        catalog raises :class:`~catalogs.reader.CatalogError` before anything is written.
    """
    started = time.monotonic()
    check_counts(n_workers=n_workers)  # before the store is touched
    log = log or (lambda msg: print(msg, file=sys.stderr))
    spec, asked_encoding = spec or FeatureSpec(), encoding
    encoding = encoding or TileEncoding()
    if not isinstance(catalog, Catalog):
        catalog = read_catalog(catalog, name, storage_options=storage_options)
    _check_reserved(catalog)
    cat_name = layout.check_name("catalog", catalog.name if name is None else name)
    store = store if isinstance(store, Store) else Store(store, storage_options)
    check_cluster_request("featurestore.build", store.url, client, scheduler, scheduler_file,
                          n_workers)
    run_id = f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    report = BuildReport(cat_name, spec.hash, run_id, n_tracks=len(catalog))

    store.initialize()
    with WriterLock(store.fs, layout.writer_lock(store.root), purpose="build"):
        fset = store.create_feature_set(spec, encoding)
        if asked_encoding is not None and fset.encoding != asked_encoding:
            kept = fset.encoding
            log(f"note: feature set {fset.hash} keeps the encoding it was made with "
                f"({kept.chunk_tiles} tiles a chunk, {kept.codec} level {kept.clevel}, "
                f"{kept.shuffle}); an encoding applies to a new feature set")
        state = fset.state()
        tracks = catalog.frame
        stats = stat_files(tracks["path"].tolist(), storage_options)
        plan = plan_build(cat_name, tracks, state.frame, stats, rebuild=rebuild)
        _check_not_all_gone(catalog, cat_name, plan, state)
        for other, n in files_of_other_catalogs(cat_name, tracks, state.frame).items():
            log(f"warning: catalog {cat_name!r} is new to this store, and {n} of its "
                f"{len(tracks)} files are built already as catalog {other!r}; they are "
                f"stored again under {cat_name!r}. A renamed catalog file? Build it with "
                f"--catalog {other} (name={other!r}) to update that catalog instead.")
        store.write_catalog(cat_name, tracks)
        committer = _Committer(fset, state, run_id, commit_seconds)
        _commit_driver_side(committer, fset, cat_name, tracks, plan, state, stats)
        report.unchanged, report.removed = len(plan.skipped), len(plan.removed)
        report.failed = len(plan.missing) + len(plan.duplicates)
        if plan.to_build:
            options = _RunOptions(client, scheduler, scheduler_file, n_workers, batch_seconds,
                                  progress, log, extractor)
            _run_batches(committer, fset, cat_name, tracks, plan, stats, report, store, options)
        committer.commit(force=True)
        if committer.commits:
            committer.compact()
        report.commits = committer.commits
        current = committer.frame[committer.frame["catalog"] == cat_name]
        failed = current[current["status"].isin(list(FAILURE_STATUSES))
                         & current["track_id"].isin(set(tracks["track_id"]))]
        report.failures = list(zip(failed["track_id"], failed["status"], failed["error"]))
    report.wall_seconds = time.monotonic() - started
    return report


def _commit_driver_side(committer: _Committer, fset: FeatureSet, cat_name: str,
                        tracks: pd.DataFrame, plan: BuildPlan, state: ManifestState,
                        stats: dict) -> None:
    """Commit what needs no worker: removed tracks, files that are not there, and second
    listings of one file."""
    previous = state.frame[state.frame["catalog"] == cat_name].set_index("track_id").to_dict(
        "index")
    paths = dict(zip(tracks["track_id"], tracks["path"]))
    rows = [_carried(previous[t], catalog=cat_name, track_id=t, status=REMOVED,
                     error="no longer in the catalog") for t in plan.removed]
    rows += [_row(cat_name, t, paths[t], "", None, status="missing",
                  error=f"no such file: {paths[t]}") for t in plan.missing]
    rows += [_row(cat_name, t, paths[t], "", None, status=DUPLICATE,
                  error=duplicate_reason(first)) for t, first in plan.duplicates.items()]
    if not rows:
        return
    gone = plan.removed + plan.missing + list(plan.duplicates)
    dead = [r for r in (live_range(previous.get(t)) for t in gone) if r]
    shape = fset.spec.tile_shape
    replaced = Moments.of(fset.arrays().read_ranges(dead), shape) if dead else Moments.zeros(shape)
    committer.add(rows, Moments.zeros(shape), replaced, 0)
    committer.commit(force=True)


@dataclass
class _RunOptions:
    client: Client | None
    scheduler: str | None
    scheduler_file: str | None
    n_workers: int | None
    batch_seconds: float | None
    progress: bool
    log: object
    extractor: Extractor = extract_track


def _check_reserved(catalog: Catalog) -> None:
    """Refuse catalog columns named as the columns every query adds to a track (it would
    hold two columns of one name, and no query of the store could join them)."""
    taken = [c for c in catalog.frame.columns if c in RESERVED_COLUMNS]
    if taken:
        raise CatalogError(f"the store gives every track a column {taken[0]!r} (columns "
                           f"{', '.join(RESERVED_COLUMNS)} are its own); rename this one, e.g. "
                           f"to 'catalog_{taken[0]}'", source=catalog.source, column=taken[0])


def _check_not_all_gone(catalog: Catalog, cat_name: str, plan: BuildPlan,
                        state: ManifestState) -> None:
    """Refuse a build that finds none of the catalog's built files: an audio folder or bucket
    not mounted would otherwise mark every track missing and drop its tiles, and the next
    build would extract the whole library again."""
    frame = state.frame
    built = frame[(frame["catalog"] == cat_name) & (frame["status"] == OK)]
    paths = dict(zip(catalog.frame["track_id"], catalog.frame["path"]))
    same = built[[paths.get(t) == p for t, p in zip(built["track_id"], built["path"])]]
    if len(same) >= 2 and set(same["track_id"]) <= set(plan.missing):
        raise CatalogError(
            f"none of the {len(same)} files built before can be found now (e.g. "
            f"{same['path'].iloc[0]}): is their folder or bucket mounted? Nothing was changed. "
            "If they are gone for good, remove their rows from the catalog",
            source=catalog.source)


def _run_batches(committer, fset, cat_name, tracks, plan, stats, report, store,
                 options: _RunOptions) -> None:
    with cluster_for(store.url, options.client, options.scheduler, options.scheduler_file,
                     options.n_workers) as client:
        _submit_all(client, committer, fset, cat_name, tracks, plan, stats, report, store,
                    options)


def _batch_rows(cat_name: str, batch: list, info: list[TrackMeta], start: int,
                previous: dict, paths: dict, stats: dict, report: BuildReport) -> list[dict]:
    """The manifest rows of a written batch whose region starts at ``start``; counts them in
    ``report``."""
    rows, cursor = [], start
    for task, m in zip(batch, info):
        fp = stats[paths[task.track_id]].fingerprint
        if m.unchanged:
            rows.append(_carried(previous[task.track_id], catalog=cat_name,
                                 track_id=task.track_id, path=task.path, fingerprint=fp))
            report.refreshed += 1
            continue
        tile_start = cursor if m.status == OK else -1
        cursor += m.n_tiles if m.status == OK else 0
        rows.append(_row(cat_name, task.track_id, task.path, fp, m, tile_start))
        if m.status == OK:
            report.built += 1
        else:
            report.failed += 1
    return rows


def _submit_all(client, committer, fset, cat_name, tracks, plan, stats, report, store,
                options: _RunOptions) -> None:
    spec = fset.spec
    options.log(f"dask dashboard: {client.dashboard_link}")
    n_workers = max(len(client.scheduler_info(n_workers=-1)["workers"]), 1)
    arrays = fset.arrays(read_only=False)
    arrays.consolidate()  # current however the group was last written, before any commit here
    chunk = arrays.chunk_tiles
    batches = make_batches(plan.to_build, plan.estimated_seconds, n_workers,
                           chunk * spec.tile_seconds, options.batch_seconds)
    paths = dict(zip(tracks["track_id"], tracks["path"]))
    previous = committer.frame[committer.frame["catalog"] == cat_name].set_index(
        "track_id").to_dict("index")
    so = store.storage_options
    next_free = round_up(committer.high_water, chunk)

    run = report.run_id
    # One graph for all extractions and one for their metas: the scheduler takes each graph
    # in one message, where one submit per task sent it one message (and a graph) per task.
    exts = client.map(extract_batch, batches, spec=spec, storage_options=so,
                      extract=options.extractor, pure=False,
                      key=[f"extract-{run}-{i}" for i in range(len(batches))])
    # Metas and writes jump the queue of extractions: tiles are written (and leave worker
    # memory) as soon as they exist, not after every extraction has run.
    meta_futures = client.map(batch_meta, exts, pure=False, priority=10,
                              key=[f"meta-{run}-{i}" for i in range(len(batches))])
    extracts = dict(enumerate(exts))
    metas = {m: i for i, m in enumerate(meta_futures)}
    writes: dict = {}  # write future -> (batch index, metas, region start, region end)
    bar = tqdm(total=len(plan.to_build), unit="track", desc=f"build {cat_name}",
               disable=not options.progress, file=sys.stderr, dynamic_ncols=True)
    # Results are gathered on the client's event loop as tasks finish, not fetched one round
    # trip at a time by this thread; each pass takes every result that arrived meanwhile, so
    # the writes they call for go out as one graph and the commit runs once.
    pending = as_completed(meta_futures, with_results=True)
    try:
        for done in pending.batches():
            ready = []  # (batch index, metas, region start, region end)
            for future, result in done:
                if future in metas:
                    i = metas.pop(future)
                    n = sum(m.n_tiles for m in result if m.status == OK)
                    ready.append((i, result, next_free, next_free + round_up(n, chunk)))
                    next_free = ready[-1][3]
                    report.audio_seconds += sum(m.duration_s for m in result)
                    bar.update(len(result))
                else:
                    i, info, start, end = writes.pop(future)
                    added, replaced = result
                    del extracts[i]
                    rows = _batch_rows(cat_name, batches[i], info, start, previous, paths,
                                       stats, report)
                    report.tiles_written += added.count
                    committer.add(rows, added, replaced, end)
            if ready:
                arrays.ensure_capacity(next_free)
                olds = [[None if m.unchanged else live_range(previous.get(task.track_id))
                         for task, m in zip(batches[i], info)] for i, info, _, _ in ready]
                new = client.map(write_batch, [extracts[i] for i, *_ in ready],
                                 [start for _, _, start, _ in ready], olds,
                                 tiles_url=fset.tiles_url, storage_options=so,
                                 shape=spec.tile_shape, pure=False, priority=10,
                                 key=[f"write-{run}-{i}" for i, *_ in ready])
                writes.update(zip(new, ready))
                pending.update(new)
                bar.set_postfix_str(f"{report.audio_seconds / 3600:.2f} h audio")
            committer.commit()
    finally:
        bar.close()
