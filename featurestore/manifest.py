"""The build manifest: where builds are committed, one Parquet file per commit (its columns and
files: docs/store-format.md).

A commit is one Parquet file ``log/<seq>.parquet`` written atomically after the tiles it points
to are in the Zarr arrays; a track is visible exactly when the commit naming it exists. The
current state is the last row per ``(catalog, track_id)`` over the snapshot and the log. At the
end of a run the state is compacted into ``snapshot.parquet`` (a plain table any Parquet reader
can use) and the log files it covers are deleted; a reader racing that deletion notices the gap
in sequence numbers and reads again.

Each file carries ``featurestore.seq`` and ``featurestore.high_water`` in its Parquet key-value
metadata: the commit number, and the end of the highest tile slot ever committed, below which
slots are never written again (so that a reader holding an older view never reads new data).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from featurestore.parquet_files import parquet_bytes, read_parquet
from featurestore.urls import atomic_write, join

SCHEMA = pa.schema([
    ("catalog", pa.string()),
    ("track_id", pa.string()),
    ("path", pa.string()),
    ("fingerprint", pa.string()),
    ("content_hash", pa.string()),
    ("status", pa.string()),
    ("error", pa.string()),
    ("n_tiles", pa.int64()),
    ("tile_start", pa.int64()),
    ("duration_s", pa.float64()),
    ("source_rate", pa.int64()),
    ("channels", pa.int64()),
    ("built_at", pa.timestamp("us", tz="UTC")),
    ("run_id", pa.string()),
    ("seq", pa.int64()),
])
KEY = ["catalog", "track_id"]
_SEQ, _HIGH = b"featurestore.seq", b"featurestore.high_water"


def empty_frame() -> pd.DataFrame:
    return SCHEMA.empty_table().to_pandas()


@dataclass
class ManifestState:
    """The committed state: one row per (catalog, track_id), the last commit number, and the
    tile high-water mark."""

    frame: pd.DataFrame
    seq: int
    high_water: int


class ManifestLog:
    """Reads and appends the manifest of one feature set (``<feature set>/manifest``)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs, self.path = fs, path
        self.snapshot_path = join(path, "snapshot.parquet")
        self.log_dir = join(path, "log")

    def _log_path(self, seq: int) -> str:
        return join(self.log_dir, f"{seq:010d}.parquet")

    def _read_table(self, path: str, columns: list[str] | None = None,
                    where: pc.Expression | None = None) -> tuple[pa.Table, int, int]:
        table = read_parquet(self.fs, path, columns, where)
        meta = table.schema.metadata or {}
        return table, int(meta.get(_SEQ, b"0")), int(meta.get(_HIGH, b"0"))

    def _log_seqs(self) -> list[int]:
        try:
            names = self.fs.ls(self.log_dir, detail=False)
        except FileNotFoundError:
            return []
        seqs = []
        for name in names:
            base = name.rstrip("/").rsplit("/", 1)[-1]
            if base.endswith(".parquet") and base[:-8].isdigit():
                seqs.append(int(base[:-8]))
        return sorted(seqs)

    def read(self, attempts: int = 20, columns: list[str] | None = None,
             where: pc.Expression | None = None) -> ManifestState:
        """The current committed state (empty if nothing was ever committed). ``columns`` and
        ``where`` (a filter on the key columns) read part of it, filtered before any pandas
        conversion."""
        if columns is not None:
            columns = list(dict.fromkeys([*KEY, *columns]))
        for _ in range(attempts):
            try:
                return self._read_once(columns, where)
            except (FileNotFoundError, _Raced):
                time.sleep(0.05)  # a compaction ran between our listing and our reads
        raise RuntimeError(f"{self.path}: manifest kept changing while being read")

    def _read_once(self, columns: list[str] | None, where: pc.Expression | None
                   ) -> ManifestState:
        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        if self.fs.exists(self.snapshot_path):
            snap, seq, high = self._read_table(self.snapshot_path, columns, where)
            tables = [snap]
        else:
            tables, seq, high = [], 0, 0
        for s in self._log_seqs():
            if s <= seq:
                continue
            if s != seq + 1:
                raise _Raced()
            table, seq, part_high = self._read_table(self._log_path(s), columns, where)
            high = max(high, part_high)
            tables.append(table)
        if not tables:
            return ManifestState(schema.empty_table().to_pandas(), 0, 0)
        frame = pa.concat_tables([t.cast(schema) for t in tables]).to_pandas()
        frame = frame.drop_duplicates(KEY, keep="last").reset_index(drop=True)
        return ManifestState(frame, seq, high)

    def append(self, rows: pd.DataFrame, seq: int, high_water: int) -> None:
        """Commit ``rows`` as commit number ``seq``: after this returns they are visible."""
        rows = rows.assign(seq=seq)
        atomic_write(self.fs, self._log_path(seq), _to_parquet(rows, seq, high_water))

    def compact(self, state: ManifestState) -> None:
        """Write ``state`` as the snapshot and delete the log files it covers."""
        atomic_write(self.fs, self.snapshot_path,
                     _to_parquet(state.frame, state.seq, state.high_water))
        for s in self._log_seqs():
            if s <= state.seq:
                self.fs.rm_file(self._log_path(s))


class _Raced(Exception):
    pass


def _to_parquet(frame: pd.DataFrame, seq: int, high_water: int) -> bytes:
    return parquet_bytes(frame, SCHEMA, {_SEQ: str(seq).encode(),
                                         _HIGH: str(high_water).encode()})
