"""``score``: batch scoring of a store's tracks with a trained model, on Dask, written back.

The driver (this process) takes the model's scoring lock, works out which tracks need scores
(incremental: those without a current score of this model version), adopts the finished batches
of a run that was killed, submits one task per batch of tracks, and when every task is done
commits the run in one atomic write (see :mod:`scoring.score_tables`).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from distributed import Client, as_completed
from tqdm.auto import tqdm

from featurestore import layout
from featurestore.cluster import check_cluster_request, cluster_for
from featurestore.errors import check_counts
from featurestore.exit_codes import ExitCode
from featurestore.lock import WriterLock
from featurestore.statuses import FAILURE_STATUSES, OK, PENDING
from featurestore.store import Store
from scoring.aggregate import AGGREGATES, POOLED
from scoring.embeddings import embedding_kind
from scoring.score_tables import KEY, ScoreTable, VersionInfo
from scoring.score_tasks import ScoreJob, score_batch
from training.config import TRACK_LEVEL, TrainConfig
from training.inference import parse_device
from training.model_files import ModelFiles

_TRACK_COLUMNS = ["status", "n_tiles", "tile_start", "content_hash"]


@dataclass
class ScoreReport:
    """What a scoring run did. ``skipped`` lists (catalog, track_id, reason) of catalog tracks
    that have no usable features for this model."""

    model: str
    version: str
    feature_set: str
    run_id: str
    aggregate: str
    scored: int = 0
    #: of the tracks scored, those the model was fitted on, given their cross-fitted scores
    cross_fitted: int = 0
    tiles: int = 0
    adopted: int = 0
    up_to_date: int = 0
    dropped: int = 0
    commit: int = 0
    workers: int = 0
    model_loads: int = 0
    task_seconds: float = 0.0
    seconds: float = 0.0
    skipped: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def exit_code(self) -> ExitCode:
        """``OK``: tracks without usable features are reported, not failures of the run."""
        return ExitCode.OK

    def summary(self, max_skipped: int = 20) -> str:
        how = ("each track from all its tiles" if self.aggregate == POOLED
               else f"the {self.aggregate} of its tiles' scores")
        on = f" on {self.workers} worker{'s' * (self.workers > 1)}" if self.workers else ""
        lines = [f"model {self.model!r} version {self.version} ({how}), "
                 f"feature set {self.feature_set}, run {self.run_id}",
                 f"  {self.scored} track{'s' * (self.scored != 1)} scored ({self.tiles} "
                 f"tiles){on}, {self.adopted} adopted from an interrupted run, "
                 f"{self.up_to_date} up to date, {self.dropped} dropped (no longer built), "
                 f"{len(self.skipped)} skipped; {self.seconds:.1f} s"]
        if self.cross_fitted:
            lines.append(f"  {self.cross_fitted} of them fitted by the model: ranked by their "
                         "cross-fitted scores, from the model fitted without each")
        if self.commit:
            lines.append(f"  committed as commit {self.commit}")
        else:
            lines.append("  nothing to do: every track has a current score")
        reasons = Counter(reason for *_, reason in self.skipped)
        for reason, n in reasons.most_common():
            lines.append(f"  skipped {n}: {reason}")
        for catalog, track_id, reason in self.skipped[:max_skipped]:
            lines.append(f"  SKIPPED {catalog}/{track_id}: {reason}")
        if len(self.skipped) > max_skipped:
            lines.append(f"  ... and {len(self.skipped) - max_skipped} more")
        return "\n".join(lines)


def _skip_reasons(store: Store, tracks: pd.DataFrame, feature_set: str) -> list[tuple]:
    """Why each catalog track that is not ``ok`` in the model's feature set has no scores."""
    out = []
    other_ok: dict[tuple, str] = {}
    pending = tracks[tracks["status"] == PENDING]
    if len(pending):
        for fset in store.feature_sets():
            if fset.hash == feature_set:
                continue
            state = fset.state().frame
            for key in state.loc[state["status"] == OK, KEY].itertuples(index=False):
                other_ok.setdefault(tuple(key), fset.hash)
    for row in tracks[tracks["status"] != OK].itertuples(index=False):
        key = (row.catalog, row.track_id)
        if row.status in FAILURE_STATUSES:
            reason = f"its build failed ({row.status})"
        elif key in other_ok:
            reason = (f"its features are in feature set {other_ok[key]}, not the model's "
                      f"{feature_set}")
        else:
            reason = f"not built yet for feature set {feature_set}"
        out.append((row.catalog, row.track_id, reason))
    return sorted(out)


def _adoptable(table: ScoreTable, todo: pd.DataFrame,
               aggregate: str) -> tuple[list[str], pd.DataFrame]:
    """Staged files of an interrupted run whose every row scores a track still to do, with
    its current content and this aggregation, and whose embeddings were staged beside them;
    and the ``catalog, track_id`` they score."""
    files = [f for f in table.staged_files() if table.fs.exists(table.embeddings_of(f))]
    wanted = set(zip(todo["catalog"], todo["track_id"], todo["content_hash"]))
    adopted, done = [], set()
    for f in files if len(todo) else []:
        rows = table.read_staged([f], [*KEY, "content_hash", "aggregate"])
        keys = set(zip(rows["catalog"], rows["track_id"], rows["content_hash"]))
        if keys and keys <= wanted and set(rows["aggregate"]) == {aggregate}:
            adopted.append(f)
            wanted -= keys
            done |= {key[:2] for key in keys}
    return adopted, pd.DataFrame(sorted(done), columns=KEY)


def _batches(todo: pd.DataFrame, batch_tiles: int) -> list[pd.DataFrame]:
    """Tracks in slot order, cut into batches of about ``batch_tiles`` tiles."""
    todo = todo.sort_values("tile_start", kind="stable").reset_index(drop=True)
    cut = np.cumsum(todo["n_tiles"].to_numpy()) // max(batch_tiles, 1)
    return [rows for _, rows in todo.groupby(cut, sort=True)]


def score(store: Store | str, model: str, *, rescore: bool = False,
          aggregate: str | None = None, device: str = "auto",
          batch_size: int | None = None, batch_tiles: int | None = None,
          client: Client | None = None,
          scheduler: str | None = None, scheduler_file: str | None = None,
          n_workers: int | None = None, storage_options: dict | None = None,
          progress: bool = True, log=None) -> ScoreReport:
    """Score the store's built tracks with ``model`` and commit the rankings into the store.

    Parameters
    ----------
    store : str or Store
        The store (URL or open store) holding the model and the features.
    model : str
        A trained model's name (``models/<name>``).
    rescore : bool
        Score every track again and replace all of this version's scores; by default only
        tracks without a current score (new, or whose audio changed) are scored.
    aggregate : {"mean", "max", "median"}, optional
        How tile scores make a track score; default the version's (``mean`` when new).
        Changing it for an existing version needs ``rescore``. Track-level models
        (``linear``, ``kernel``, ``pooled``) score a track from all its tiles themselves
        (recorded as ``pooled``) and take no aggregate.
    device : str
        Torch device on the workers: ``auto`` (CUDA where present), ``cpu``, ``cuda``.
    batch_size : int, optional
        Tiles per forward pass (default 16 on a CPU, 1024 on a GPU).
    batch_tiles : int, optional
        Tiles per task (default: the work split in about four tasks per worker, 64 to 4096).
    client, scheduler, scheduler_file, n_workers : optional
        The Dask cluster, as for :func:`featurestore.build`.

    Returns
    -------
    ScoreReport
        Raises :class:`~training.config.TrainingError` for a missing or unfinished model,
        :class:`~featurestore.errors.StoreError` when the store lacks the model's feature set.
    """
    started = time.monotonic()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    check_counts(batch_size=batch_size, batch_tiles=batch_tiles, n_workers=n_workers)
    parse_device(device)  # its form here; whether a worker has it, on the worker
    store = store if isinstance(store, Store) else Store(store, storage_options)
    check_cluster_request("scoring.score", store.url, client, scheduler, scheduler_file,
                          n_workers)
    store.check_layout()
    files = ModelFiles(store, model)
    config = files.read_complete_config()
    version = files.version()
    fset = store.feature_set(config["feature_set"])
    table = ScoreTable(store, model, version)
    run_id = f"{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"

    with WriterLock(store.fs, layout.score_lock(store.root, model),
                    purpose=f"scoring of {model}"):
        info = table.info()
        track_level = config["arch"] in TRACK_LEVEL
        if track_level and aggregate not in (None, POOLED):
            raise ValueError(f"model {model!r} ({config['arch']}) scores each track from all "
                             "of its tiles itself; --aggregate applies to tile models only")
        if info is not None and aggregate not in (None, info.aggregate) and not rescore:
            raise ValueError(f"model {model!r} version {version} is scored with the "
                             f"{info.aggregate} of tile scores; pass --rescore to replace "
                             f"every score with the {aggregate}")
        how = POOLED if track_level else (
            aggregate or (info.aggregate if info is not None else "mean"))
        if how not in (*AGGREGATES, POOLED):
            raise ValueError(f"aggregate {how!r}: choose one of {', '.join(AGGREGATES)}")
        wanted = VersionInfo(model, version, fset.hash, tuple(config["classes"]), how,
                             config["arch"], embedding_kind(config))
        report = ScoreReport(model, version, fset.hash, run_id, how)

        tracks = store.tracks(feature_set=fset.hash, columns=_TRACK_COLUMNS)
        report.skipped = _skip_reasons(store, tracks, fset.hash)
        built = tracks[tracks["status"] == OK]
        scored = table.tracks([*KEY, "content_hash"])
        if rescore:
            todo = built
        else:
            # current: scored and embedded from the track's audio as it is now (a version
            # scored before embeddings were written gets them at its next run)
            both = scored.merge(table.embedded([*KEY, "content_hash"]),
                                on=[*KEY, "content_hash"])
            current = built.merge(both, on=[*KEY, "content_hash"], how="left",
                                  indicator=True)["_merge"].eq("both").to_numpy()
            todo, report.up_to_date = built[~current], int(current.sum())
        report.dropped = len(scored) - len(scored.merge(built[KEY], on=KEY))
        adopted, done = ([], None) if rescore else _adoptable(table, todo, how)
        if adopted:
            report.adopted = len(done)
            todo = todo.merge(done.assign(_done=True), on=KEY, how="left")
            todo = todo[todo["_done"].isna()].drop(columns="_done")

        staged: list[str] = []
        if len(todo):
            job = ScoreJob(store.url, model, version, fset.hash, fset.tiles_url,
                           tuple(config["classes"]), bool(config["softmax"]), how, run_id,
                           device, batch_size,
                           TrainConfig.from_dict(config["train_config"]).mixed_precision,
                           store.storage_options)
            staged = _run(job, todo, batch_tiles, report, store, client, scheduler,
                          scheduler_file, n_workers, progress, log)
        # said once the scores are in hand: a run that fails leaves the version as it was
        if info != wanted:
            table.write_info(wanted)
        if staged or adopted or report.dropped or rescore:
            report.commit = table.commit(adopted + staged, keep=built[KEY], replace=rescore)
        table.clean()
    report.seconds = time.monotonic() - started
    return report


def _local_workers(device: str) -> int | None:
    """Workers of a LocalCluster that scores on ``device``: one where that is CUDA (each worker
    keeps the model and its batches' activations on the GPU, so one per core would share one
    GPU's memory among them all), else the default (one per core)."""
    return 1 if parse_device(device).type == "cuda" else None


def _run(job: ScoreJob, todo: pd.DataFrame, batch_tiles: int | None, report: ScoreReport,
         store: Store, client, scheduler, scheduler_file, n_workers, progress, log) -> list[str]:
    """Submit the batches, wait for every one; returns the staged files written."""
    with cluster_for(store.url, client, scheduler, scheduler_file,
                     n_workers or _local_workers(job.device)) as client:
        log(f"dask dashboard: {client.dashboard_link}")
        report.workers = max(len(client.scheduler_info(n_workers=-1)["workers"]), 1)
        total = int(todo["n_tiles"].sum())
        size = batch_tiles or int(np.clip(total // (4 * report.workers), 64, 4096))
        batches = _batches(todo, size)
        columns = [*KEY, "content_hash", "tile_start", "n_tiles"]
        futures = {client.submit(score_batch, rows[columns].to_dict("records"), i, job,
                                 pure=False, key=f"score-{job.run_id}-{i}"): i
                   for i, rows in enumerate(batches)}
        bar = tqdm(total=len(todo), unit="track", desc=f"score {job.model}",
                   disable=not progress, file=sys.stderr, dynamic_ncols=True)
        try:
            for future in as_completed(futures):
                done = future.result()
                report.scored += done["tracks"]
                report.cross_fitted += done["cross_fitted"]
                report.tiles += done["tiles"]
                report.model_loads += int(done["loaded"])
                report.task_seconds += done["seconds"]
                bar.update(done["tracks"])
                bar.set_postfix_str(f"{report.tiles} tiles")
        finally:
            bar.close()
    table = ScoreTable(store, job.model, job.version)
    return [table.staged_path(job.run_id, i) for i in range(len(batches))]
