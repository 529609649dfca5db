"""Scores written back into the store, reading them, and how a scoring run commits them.

One folder per model version (the version is a hash of the model's config and weights), holding
``version.json``, ``rankings.parquet`` (the committed state), per-tile score files and the
staged rankings of a running run, and ``embeddings.parquet`` (one embedding per track, see
:mod:`scoring.embedding_files`); docs/store-format.md describes each file and its columns.

A scoring task writes its batch's tile scores and rankings as two new files; nothing reads them
yet. The run commits by writing a new ``rankings.parquet`` (the previous rows, less the tracks
this run replaces, plus the staged rows) in one atomic write: a reader sees the previous run's
state or this one's, never a mix, and any Parquet reader can read the file as it is. Each row
names the tile file holding its track's tile scores, so tile files of replaced scores are simply
no longer referenced (and are deleted after the commit). A run killed before its commit leaves
``rankings.parquet`` untouched; its staged batches are adopted by the next run, which does not
score those tracks again. The embeddings follow the same path: a batch stages its embeddings
before its rankings (a staged rankings file says its batch is whole), and the commit writes
``embeddings.parquet`` just before ``rankings.parquet``, both with the same commit number.
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
from featurestore.errors import StoreError, StoreLookupError
from featurestore.parquet_files import parquet_bytes, read_parquet
from featurestore.store import Store
from featurestore.urls import atomic_write, join
from scoring.embedding_files import (KEY, commit_embeddings, last_per_key, read_embeddings,
                                     surviving)

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
    # True: the model was fitted on this track, and the score is its cross-fitted one (from
    # the model fitted without it); null when read from a file that lacks the column
    ("cross_fitted", pa.bool_()),
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
_SEQ = b"featurestore.seq"
#: Arrow booleans as pandas' nullable ones: ``cross_fitted`` is null where a file lacks it
_NULLABLE_BOOLEANS = {pa.bool_(): pd.BooleanDtype()}.get
#: Rankings are stored sorted by label, best score first, each label's rows in row groups of
#: at most this many rows, so that "the best tracks for a label" reads only its own groups.
ROW_GROUP_ROWS = 65536
#: Columns with few distinct values, dictionary-encoded; ids and hashes are not (one distinct
#: value a track: a dictionary only makes the file larger and its write slower).
_DICTIONARY = ["catalog", "label", "tiles_part", "model", "version", "feature_set", "aggregate",
               "run_id"]
_ORDER = [("label", "ascending"), ("score", "descending"), ("catalog", "ascending"),
          ("track_id", "ascending")]


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
    #: what the version's track embeddings are (``scoring.embeddings.embedding_kind``)
    embedding: str = ""

    def to_dict(self) -> dict:
        return {**self.__dict__, "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict) -> VersionInfo:
        return cls(**{**data, "classes": tuple(data["classes"])})


class ScoreTable:
    """The scores of one model version in a store (``version`` names the folder)."""

    def __init__(self, store: Store, model: str, version: str):
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
    def embeddings_path(self) -> str:
        return self.path("embeddings.parquet")

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

    def _committed_table(self, columns: list[str] | None = None,
                         where: pc.Expression | None = None) -> tuple[pa.Table, int]:
        """The committed rankings as Arrow and their commit number, from one read of the
        file."""
        try:
            table = read_parquet(self.fs, self.rankings_path, columns, where, RANKING_SCHEMA)
        except FileNotFoundError:
            return _empty_table(columns), 0
        return table, _seq_of(table.schema)

    def rankings(self, columns: list[str] | None = None,
                 where: pc.Expression | None = None) -> pd.DataFrame:
        """The committed rankings (empty before the first commit), read in one piece so that
        they are one commit's."""
        return self._committed_table(columns, where)[0].to_pandas(
            types_mapper=_NULLABLE_BOOLEANS)

    def tracks(self, columns: list[str]) -> pd.DataFrame:
        """One row per scored track: its rank-1 row (ranks are unique within a track)."""
        return self.rankings(columns, pc.field("rank") == 1)

    def embedded(self, columns: list[str]) -> pd.DataFrame:
        """One row per track with a committed embedding (``columns`` of
        ``embeddings.parquet``, the embedding itself left unread unless named)."""
        try:
            return read_parquet(self.fs, self.embeddings_path, columns).to_pandas()
        except FileNotFoundError:
            return pd.DataFrame(columns=columns)

    def embeddings(self, columns: list[str] | None = None,
                   where: pc.Expression | None = None) -> tuple[pd.DataFrame, np.ndarray]:
        """The committed embeddings: their rows (``columns``, default all but ``embedding``)
        and one ``(tracks, size)`` float32 matrix, in the same order."""
        return read_embeddings(self.fs, self.embeddings_path, columns, where)

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
                current = self.tracks([*KEY, "tiles_part"])
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
                    tiles: pd.DataFrame, embeddings: bytes | None = None) -> None:
        """Write one batch's tile scores and its staged embeddings (a file of
        :func:`scoring.embedding_files.embedding_bytes`), then its staged rankings (named by
        the tile file). A staged rankings file exists only once the others are complete."""
        tiles_part = f"tiles/{run_id}/{batch:05d}.parquet"
        atomic_write(self.fs, self.path(tiles_part), parquet_bytes(tiles, TILE_SCHEMA))
        if embeddings is not None:
            atomic_write(self.fs, self.path("staged-embeddings", run_id, f"{batch:05d}.parquet"),
                         embeddings)
        rankings = rankings.assign(tiles_part=tiles_part)
        atomic_write(self.fs, self.staged_path(run_id, batch),
                     parquet_bytes(rankings, RANKING_SCHEMA))

    def staged_path(self, run_id: str, batch: int) -> str:
        """Where batch ``batch`` of run ``run_id`` stages its rankings."""
        return self.path("staged", run_id, f"{batch:05d}.parquet")

    def embeddings_of(self, staged: str) -> str:
        """The staged embeddings file beside the staged rankings file ``staged``."""
        return staged.replace(self.path("staged"), self.path("staged-embeddings"), 1)

    # -- committing (the driver, holding the model's lock) -------------------------------

    def staged_files(self) -> list[str]:
        """Staged batch files of runs not yet committed (this one's and dead runs')."""
        try:
            return sorted(p for p in self.fs.find(self.path("staged")) if p.endswith(".parquet"))
        except FileNotFoundError:
            return []

    def read_staged(self, files: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        return self._staged_table(files, columns).to_pandas()

    def _staged_table(self, files: list[str], columns: list[str] | None = None) -> pa.Table:
        # batches staged without a column (a run killed before it existed) read it as null
        tables = [read_parquet(self.fs, f, columns, schema=RANKING_SCHEMA) for f in files]
        return (pa.concat_tables(tables) if tables else
                _empty_table(columns)).replace_schema_metadata(None)

    def commit(self, staged: list[str], keep: pd.DataFrame | None, replace: bool) -> int:
        """Commit the ``staged`` batch files: the new rankings are the previous ones (all of
        them, none if ``replace``, or only the tracks in ``keep``, a frame of ``catalog``,
        ``track_id``) less the tracks the staged rows score again, plus the staged rows.
        One atomic write; returns the new commit number.

        The file is sorted by label, so the new one is made a label at a time in Arrow: memory
        holds the staged rows and one label's rows, not the whole table several times over
        (``benchmarks/commit_cost.py``).
        """
        new = last_per_key(self._staged_table(staged), [*KEY, "label"])
        try:
            data = None if replace else pa.py_buffer(self.fs.cat_file(self.rankings_path))
        except FileNotFoundError:
            data = None
        labels = set(new["label"].unique().to_pylist())
        if data is None:
            seq = self.seq()
        else:
            previous = pq.ParquetFile(pa.BufferReader(data))
            seq = _seq_of(previous.schema_arrow)
            labels |= set(previous.read(columns=["label"])["label"].unique().to_pylist())
        keys = (None if keep is None else
                pa.table({c: pa.array(keep[c].astype(str), pa.string()) for c in KEY}))
        # the embeddings first: a run killed between the two writes has its rankings still to
        # commit, so the next run adopts its staged batches and writes both again
        embedded = [f for f in map(self.embeddings_of, staged) if self.fs.exists(f)]
        commit_embeddings(self.fs, self.embeddings_path, embedded, keys, replace, seq + 1)
        buffer = pa.BufferOutputStream()
        schema = RANKING_SCHEMA.with_metadata({_SEQ: str(seq + 1).encode()})
        with pq.ParquetWriter(buffer, schema, compression="zstd",
                              use_dictionary=_DICTIONARY) as writer:
            for label in sorted(labels):
                rows = new.filter(pc.field("label") == label)
                if data is not None:
                    old = pq.read_table(pa.BufferReader(data), filters=pc.field("label") == label,
                                        schema=RANKING_SCHEMA)
                    old = surviving(old, keys, new)
                    rows = pa.concat_tables([old.select(RANKING_SCHEMA.names), rows])
                if rows.num_rows:
                    writer.write_table(rows.sort_by(_ORDER).cast(schema),
                                       row_group_size=ROW_GROUP_ROWS)
        atomic_write(self.fs, self.rankings_path, buffer.getvalue().to_pybytes())
        return seq + 1

    def clean(self) -> None:
        """Delete staged files (committed now, or of runs whose tracks were scored again) and
        tile files no committed row refers to."""
        for folder in ("staged", "staged-embeddings"):
            if self.fs.exists(self.path(folder)):
                self.fs.rm(self.path(folder), recursive=True)
        live = set(self._committed_table(["tiles_part"])[0]["tiles_part"].unique().to_pylist())
        try:
            tile_files = [p for p in self.fs.find(self.path("tiles")) if p.endswith(".parquet")]
        except FileNotFoundError:
            tile_files = []
        prefix = self.dir.rstrip("/") + "/"
        for f in tile_files:
            if f.split(prefix, 1)[-1] not in live:
                self.fs.rm_file(f)


def versions(store: Store, model: str) -> list[VersionInfo]:
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


def _current_version(store: Store, model: str) -> str | None:
    """The model's current version, or ``None`` when the store has no such model."""
    from training.config import TrainingError
    from training.model_files import ModelFiles

    try:
        return ModelFiles(store, model).version()
    except TrainingError:
        return None


def score_table(store: Store, model: str, version: str | None = None) -> ScoreTable:
    """The committed scores of ``model`` in ``store`` (``version``: default the most recently
    committed one)."""
    store.check_layout()
    scored = [info.version for info in versions(store, model)]
    if version is None and scored:
        version = scored[-1]
    if version is None or version not in scored:
        # scoring makes the model's current version only: an older one is gone for good
        current = version is None or version == _current_version(store, model)
        raise StoreLookupError(f"{store.url} has no scores of model {model!r}"
                               f"{f' version {version}' if version else ''} (scored versions: "
                               f"{', '.join(scored) or 'none'})"
                               f"{'; run `featurestore score`' if current else ''}")
    return ScoreTable(store, model, version)


def scores(store: Store, model: str, version: str | None = None, *, lazy: bool = False,
           labels: list[str] | None = None, columns: list[str] | None = None):
    """The committed rankings of ``model``: one row per track and label with ``score``,
    ``rank`` (1 = best), ``cross_fitted`` (the model was fitted on the track, and the score
    is from the model fitted without it) and lineage (``model``, ``version``, ``feature_set``,
    ``aggregate``, ``run_id``, ``scored_at``, the track's ``content_hash``). Sorted by label,
    best score first. ``lazy`` gives a dask DataFrame; ``labels`` keeps those labels' rows (read with a
    pushed-down filter)."""
    table = score_table(store, model, version)
    labels = [labels] if isinstance(labels, str) else labels  # one label, not its letters
    columns = [columns] if isinstance(columns, str) else columns
    unknown = [c for c in columns or () if c not in RANKING_SCHEMA.names]
    if unknown:
        raise ValueError(f"rankings have no column(s) {', '.join(map(repr, unknown))} "
                         f"(columns: {', '.join(RANKING_SCHEMA.names)})")
    where = None if not labels else pc.field("label").isin(pa.array(list(labels)))
    if lazy:
        return _lazy_rankings(table, columns, where)
    return table.rankings(columns, where)


def _lazy_rankings(table: ScoreTable, columns: list[str] | None, where):
    """The committed rankings as a dask DataFrame, typed as :meth:`ScoreTable.rankings` gives
    them: ``cross_fitted`` nullable, and null where the file lacks the column."""
    import dask.dataframe as dd

    wanted = list(columns or RANKING_SCHEMA.names)
    with table.fs.open(table.rankings_path, "rb") as f:
        present = set(pq.read_schema(f).names)
    frame = dd.read_parquet(table.rankings_url, storage_options=table.store.storage_options,
                            columns=[c for c in wanted if c in present], filters=where,
                            arrow_to_pandas={"types_mapper": _NULLABLE_BOOLEANS})
    missing = [c for c in wanted if c not in present]
    if missing:
        frame = frame.assign(**{c: pd.NA for c in missing}).astype(
            {c: pd.BooleanDtype() for c in missing})
    return frame[wanted]


def tile_scores(store: Store, model: str, track_id: str | list[str] | None = None,
                catalog: str | None = None, version: str | None = None) -> pd.DataFrame:
    """Per-tile scores of ``model`` for the given tracks (default all): ``catalog``,
    ``track_id``, ``offset`` (tile position in the track), ``tile`` (row in the tile arrays),
    then one column per label."""
    table = score_table(store, model, version)
    classes = list(table.info().classes)
    rankings = table.tracks(["catalog", "track_id", "tiles_part"])
    if track_id is not None:
        ids = [track_id] if isinstance(track_id, str) else list(track_id)
        rankings = rankings[rankings["track_id"].isin(ids)]
    if catalog is not None:
        rankings = rankings[rankings["catalog"] == catalog]
    tiles = table.tiles(rankings)
    values = (np.stack(tiles["scores"].to_numpy()) if len(tiles)
              else np.zeros((0, len(classes)), np.float32))
    out = tiles[["catalog", "track_id", "offset", "tile"]].reset_index(drop=True)
    return pd.concat([out, pd.DataFrame(values, columns=classes)], axis=1)


def _seq_of(schema: pa.Schema) -> int:
    return int((schema.metadata or {}).get(_SEQ, b"0"))


def _empty_table(columns: list[str] | None) -> pa.Table:
    table = RANKING_SCHEMA.empty_table()
    return table.select(columns) if columns else table


def scores_matrix(rankings: pd.DataFrame, classes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """Rankings in long form as ``(keys, scores)``: one row per track, one column per class
    in ``classes`` order."""
    wide = rankings.pivot_table(index=KEY, columns="label", values="score", aggfunc="first",
                                sort=False)
    wide = wide.reindex(columns=list(classes))
    keys = wide.index.to_frame(index=False)
    return keys, wide.to_numpy(dtype=np.float32)
