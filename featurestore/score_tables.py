"""Scores written back into the store, and how a scoring run commits them.

One folder per model version (the version is a hash of the model's config and weights)::

    <store>/scores/<model>/<version>/version.json         model, feature set, classes, aggregation
    <store>/scores/<model>/<version>/rankings.parquet     THE committed state: one row per track
                                                          and label (score, rank, lineage)
    <store>/scores/<model>/<version>/tiles/<run>/<batch>.parquet     per-tile scores
    <store>/scores/<model>/<version>/staged/<run>/<batch>.parquet    a running run's rankings

A scoring task writes its batch's tile scores and rankings as two new files; nothing reads them
yet. The run commits by writing a new ``rankings.parquet`` (the previous rows, less the tracks
this run replaces, plus the staged rows) in one atomic write: a reader sees the previous run's
state or this one's, never a mix, and any Parquet reader can read the file as it is. Each row
names the tile file holding its track's tile scores, so tile files of replaced scores are simply
no longer referenced (and are deleted after the commit). A run killed before its commit leaves
``rankings.parquet`` untouched; its staged batches are adopted by the next run, which does not
score those tracks again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore import layout
from featurestore.errors import StoreError
from featurestore.parquet_files import parquet_bytes, read_parquet
from featurestore.urls import atomic_write, join

RANKING_SCHEMA = pa.schema([
    ("catalog", pa.string()),
    ("track_id", pa.string()),
    ("label", pa.string()),
    ("score", pa.float32()),
    ("rank", pa.int32()),
    ("n_tiles", pa.int32()),
    ("content_hash", pa.string()),
    ("tiles_part", pa.string()),
    ("model", pa.string()),
    ("version", pa.string()),
    ("feature_set", pa.string()),
    ("aggregate", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
])
TILE_SCHEMA = pa.schema([
    ("catalog", pa.string()),
    ("track_id", pa.string()),
    ("offset", pa.int32()),
    ("tile", pa.int64()),
    ("scores", pa.list_(pa.float32())),
    ("run_id", pa.string()),
])
KEY = ["catalog", "track_id"]
_SEQ = b"featurestore.seq"
#: Rankings are stored sorted by label, best score first, in row groups of this many rows,
#: so that "the best tracks for a label" reads a few row groups.
ROW_GROUP_ROWS = 65536


@dataclass(frozen=True)
class VersionInfo:
    """What a version folder scores: the model, its version, feature set, classes and the
    aggregation of tile scores into track scores."""

    model: str
    version: str
    feature_set: str
    classes: tuple[str, ...]
    aggregate: str
    arch: str = ""

    def to_dict(self) -> dict:
        return {**self.__dict__, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> VersionInfo:
        return cls(**{**data, "classes": tuple(data["classes"])})


class ScoreTable:
    """The scores of one model version in a store (``version`` names the folder)."""

    def __init__(self, store, model: str, version: str):
        self.store, self.model, self.version = store, layout.check_name("model", model), version
        self.fs = store.fs
        self.dir = layout.score_version_dir(store.root, model, version)

    # -- paths ---------------------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return join(self.dir, *parts)

    @property
    def rankings_path(self) -> str:
        return self.path("rankings.parquet")

    @property
    def url(self) -> str:
        """The version folder as a URL (``dir`` is the filesystem's path)."""
        return layout.score_version_dir(self.store.url, self.model, self.version)

    @property
    def rankings_url(self) -> str:
        return join(self.url, "rankings.parquet")

    # -- version info --------------------------------------------------------------------

    def info(self) -> VersionInfo | None:
        try:
            return VersionInfo.from_dict(json.loads(self.fs.cat_file(self.path("version.json"))))
        except FileNotFoundError:
            return None

    def write_info(self, info: VersionInfo) -> None:
        atomic_write(self.fs, self.path("version.json"),
                     json.dumps(info.to_dict(), indent=2).encode())

    # -- reading -------------------------------------------------------------------------

    def seq(self) -> int:
        """The number of the last commit (0: nothing committed yet); reads the footer only."""
        try:
            with self.fs.open(self.rankings_path, "rb") as f:
                return _seq_of(pq.read_schema(f))
        except FileNotFoundError:
            return 0

    def _committed(self, columns: list[str] | None = None,
                   where: pc.Expression | None = None) -> tuple[pd.DataFrame, int]:
        """The committed rankings and their commit number, from one read of the file."""
        try:
            table = read_parquet(self.fs, self.rankings_path, columns, where)
        except FileNotFoundError:
            return _empty(columns), 0
        return table.to_pandas(), _seq_of(table.schema)

    def rankings(self, columns: list[str] | None = None,
                 where: pc.Expression | None = None) -> pd.DataFrame:
        """The committed rankings (empty before the first commit), read in one piece so that
        they are one commit's."""
        return self._committed(columns, where)[0]

    def tiles(self, rankings: pd.DataFrame, attempts: int = 20) -> pd.DataFrame:
        """The tile scores of the tracks in ``rankings`` (rows of :meth:`rankings` carrying
        ``catalog``, ``track_id`` and ``tiles_part``), in track order then tile offset."""
        keys = rankings[[*KEY, "tiles_part"]].drop_duplicates()
        for _ in range(attempts):
            try:
                frames = []
                for part, rows in keys.groupby("tiles_part", sort=False):
                    where = pc.field("track_id").isin(pa.array(rows["track_id"].unique()))
                    table = read_parquet(self.fs, self.path(part), where=where).to_pandas()
                    frames.append(table.merge(rows[KEY], on=KEY))
                break
            except FileNotFoundError:
                # a commit replaced these scores and cleaned up: the caller's rankings are old
                time.sleep(0.05)
                current = self.rankings([*KEY, "tiles_part"]).drop_duplicates()
                keys = keys[KEY].merge(current, on=KEY)
        else:
            raise StoreError(f"{self.dir}: tile scores kept changing while being read")
        if not frames:
            return TILE_SCHEMA.empty_table().to_pandas()
        out = pd.concat(frames, ignore_index=True)
        order = keys[KEY].drop_duplicates().reset_index(drop=True).reset_index()
        out = out.merge(order, on=KEY).sort_values(["index", "offset"], kind="stable")
        return out.drop(columns="index").reset_index(drop=True)

    # -- writing (workers) ---------------------------------------------------------------

    def write_batch(self, run_id: str, batch: int, rankings: pd.DataFrame,
                    tiles: pd.DataFrame) -> None:
        """Write one batch's tile scores, then its staged rankings (named by the tile file).
        A staged file exists only once its tile file is complete."""
        tiles_part = f"tiles/{run_id}/{batch:05d}.parquet"
        atomic_write(self.fs, self.path(tiles_part), parquet_bytes(tiles, TILE_SCHEMA))
        rankings = rankings.assign(tiles_part=tiles_part)
        atomic_write(self.fs, self.staged_path(run_id, batch),
                     parquet_bytes(rankings, RANKING_SCHEMA))

    def staged_path(self, run_id: str, batch: int) -> str:
        """Where batch ``batch`` of run ``run_id`` stages its rankings."""
        return self.path("staged", run_id, f"{batch:05d}.parquet")

    # -- committing (the driver, holding the model's lock) -------------------------------

    def staged_files(self) -> list[str]:
        """Staged batch files of runs not yet committed (this one's and dead runs')."""
        try:
            return sorted(p for p in self.fs.find(self.path("staged")) if p.endswith(".parquet"))
        except FileNotFoundError:
            return []

    def read_staged(self, files: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        frames = [read_parquet(self.fs, f, columns).to_pandas() for f in files]
        return pd.concat(frames, ignore_index=True) if frames else _empty(columns)

    def commit(self, staged: list[str], keep: pd.DataFrame | None, replace: bool) -> int:
        """Commit the ``staged`` batch files: the new rankings are the previous ones (all of
        them, none if ``replace``, or only the tracks in ``keep``, a frame of ``catalog``,
        ``track_id``) less the tracks the staged rows score again, plus the staged rows.
        One atomic write; returns the new commit number."""
        new = self.read_staged(staged)
        old, seq = self._committed()
        if replace:
            old = old.iloc[:0]
        if keep is not None:
            old = old.merge(keep[KEY].drop_duplicates(), on=KEY)
        if len(new):
            replaced = new[KEY].drop_duplicates().assign(_new=True)
            old = old.merge(replaced, on=KEY, how="left")
            old = old[old["_new"].isna()].drop(columns="_new")
        # a track scored twice among the staged files keeps its last (adopted files come first)
        new = new.drop_duplicates([*KEY, "label"], keep="last")
        frame = pd.concat([old, new], ignore_index=True) if len(old) else new
        frame = frame.sort_values(["label", "score", "catalog", "track_id"],
                                  ascending=[True, False, True, True], kind="stable")
        atomic_write(self.fs, self.rankings_path,
                     parquet_bytes(frame, RANKING_SCHEMA, {_SEQ: str(seq + 1).encode()},
                                   ROW_GROUP_ROWS))
        return seq + 1

    def clean(self) -> None:
        """Delete staged files (committed now, or of runs whose tracks were scored again) and
        tile files no committed row refers to."""
        if self.fs.exists(self.path("staged")):
            self.fs.rm(self.path("staged"), recursive=True)
        live = set(self.rankings(["tiles_part"])["tiles_part"].unique())
        try:
            tile_files = [p for p in self.fs.find(self.path("tiles")) if p.endswith(".parquet")]
        except FileNotFoundError:
            tile_files = []
        prefix = self.dir.rstrip("/") + "/"
        for f in tile_files:
            if f.split(prefix, 1)[-1] not in live:
                self.fs.rm_file(f)


def versions(store, model: str) -> list[VersionInfo]:
    """The scored versions of ``model`` in ``store``, the most recently committed last."""
    directory = layout.scores_dir(store.root, model)
    if not store.fs.exists(directory):
        return []
    found = []
    for path in store.fs.ls(directory, detail=False):
        name = path.rstrip("/").rsplit("/", 1)[-1]
        table = ScoreTable(store, model, name)
        info = table.info()
        if info is None:
            continue
        try:
            modified = store.fs.modified(table.rankings_path).timestamp()
        except (FileNotFoundError, NotImplementedError, OSError):
            modified = 0.0
        found.append((modified, info))
    return [info for _, info in sorted(found, key=lambda x: x[0])]


def _seq_of(schema: pa.Schema) -> int:
    return int((schema.metadata or {}).get(_SEQ, b"0"))


def _empty(columns: list[str] | None) -> pd.DataFrame:
    table = RANKING_SCHEMA.empty_table()
    return (table.select(columns) if columns else table).to_pandas()


def scores_matrix(rankings: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rankings in long form as ``(keys, scores)``: one row per track, one column per class
    in ``classes`` order."""
    wide = rankings.pivot_table(index=KEY, columns="label", values="score", aggfunc="first",
                                sort=False)
    wide = wide.reindex(columns=list(classes))
    keys = wide.index.to_frame(index=False)
    return keys, wide.to_numpy(dtype=np.float32)
