"""The track embeddings file of a scored model version: its schema, its commit, reading it.

``embeddings.parquet`` holds one row per track: the key, the content hash of the audio it was
computed from, lineage, and ``embedding``, a fixed-size list of float32 (pyarrow reads it as a
``FixedSizeListArray``, DuckDB and pandas as a list). A run's batches stage their rows as
files of their own; the commit writes the new file in one atomic write, streaming the previous
file a row group at a time, so memory holds the staged rows and one row group. The commit is
driven by :meth:`scoring.score_tables.ScoreTable.commit`, together with the rankings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from featurestore.parquet_files import read_parquet
from featurestore.urls import atomic_write

KEY = ["catalog", "track_id"]
#: Rows per row group: 8,192 tracks of 512 float32 values are 16 MiB.
ROW_GROUP_ROWS = 8192
_SEQ = b"featurestore.seq"
_DICTIONARY = ["catalog", "model", "version", "feature_set", "run_id"]


def embedding_schema(size: int) -> pa.Schema:
    """The columns of ``embeddings.parquet`` for embeddings of ``size`` values."""
    return pa.schema([
        ("catalog", pa.string()),
        ("track_id", pa.string()),
        ("content_hash", pa.string()),
        ("n_tiles", pa.int32()),
        ("embedding", pa.list_(pa.float32(), size)),
        ("model", pa.string()),
        ("version", pa.string()),
        ("feature_set", pa.string()),
        ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
    ])


def embedding_bytes(keys: pd.DataFrame, vectors: np.ndarray, lineage: dict) -> bytes:
    """A staged batch file: ``keys`` (``catalog``, ``track_id``, ``content_hash``,
    ``n_tiles``), one row of ``vectors`` per track, and the lineage columns."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        bad = keys.iloc[int(np.flatnonzero(~np.isfinite(vectors).all(1))[0])]
        raise ValueError(f"the embedding of track {bad['catalog']}/{bad['track_id']} is not "
                         "finite (NaN or infinity in the model's outputs)")
    size = vectors.shape[1]
    schema = embedding_schema(size)
    columns = {c: pa.array(keys[c].astype(str), pa.string()) for c in
               ["catalog", "track_id", "content_hash"]}
    columns["n_tiles"] = pa.array(keys["n_tiles"].to_numpy(np.int32))
    columns["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), size)
    n = len(keys)
    for name in ("model", "version", "feature_set", "run_id"):
        columns[name] = pa.array([lineage[name]] * n, pa.string())
    columns["scored_at"] = pa.array([lineage["scored_at"]] * n, schema.field("scored_at").type)
    table = pa.table(columns, schema=schema)
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer, compression="zstd", use_dictionary=_DICTIONARY)
    return buffer.getvalue().to_pybytes()


def last_per_key(table: pa.Table, key: list[str]) -> pa.Table:
    """``table`` with one row per ``key``, its last: a track scored twice among the staged
    files keeps its last result (adopted files come first)."""
    rows = table.append_column("_row", pa.array(np.arange(table.num_rows)))
    last = rows.group_by(key, use_threads=False).aggregate([("_row", "max")])
    if last.num_rows == table.num_rows:
        return table
    return table.take(np.sort(last["_row_max"].to_numpy()))


def _keys(table: pa.Table) -> pa.ChunkedArray:
    # one string per track: Arrow's joins take no list columns, so rows are matched by key
    return pc.binary_join_element_wise(table["catalog"].cast(pa.string()),
                                       table["track_id"].cast(pa.string()), "\x1f")


def surviving(old: pa.Table, keep: pa.Table | None, new: pa.Table) -> pa.Table:
    """The rows of ``old`` that a commit keeps, in their order: tracks in ``keep`` (all when
    ``None``) that ``new`` does not score again."""
    keys = _keys(old)
    mask = pa.array(np.ones(old.num_rows, bool))
    if keep is not None:
        mask = pc.and_(mask, pc.is_in(keys, value_set=_keys(keep).combine_chunks()))
    if new.num_rows:
        mask = pc.and_(mask, pc.invert(pc.is_in(keys, value_set=_keys(new).combine_chunks())))
    return old.filter(mask)


def commit_embeddings(fs, path: str, staged: list[str], keep: pa.Table | None, replace: bool,
                      seq: int) -> None:
    """Write ``path`` anew: the previous rows (none if ``replace``; only the tracks in
    ``keep``) less the tracks the ``staged`` files embed again, plus the staged rows; commit
    number ``seq`` in the key-value metadata. One atomic write; nothing is written when there
    is neither a previous file nor a staged row (the size of the embeddings is not known)."""
    tables = [read_parquet(fs, f) for f in staged]
    try:
        data = None if replace else pa.py_buffer(fs.cat_file(path))
    except FileNotFoundError:
        data = None
    previous = None if data is None else pq.ParquetFile(pa.BufferReader(data))
    if not tables and previous is None:
        return
    schema = (tables[0].schema if tables else previous.schema_arrow).with_metadata(
        {_SEQ: str(seq).encode()})
    sizes = {t.schema.field("embedding").type.list_size for t in tables}
    if previous is not None:
        sizes.add(previous.schema_arrow.field("embedding").type.list_size)
    if len(sizes) > 1:
        raise ValueError(f"{path}: embeddings of several sizes ({sorted(sizes)}) in one model "
                         "version; score it again with --rescore")
    new = (last_per_key(pa.concat_tables([t.replace_schema_metadata(None) for t in tables]), KEY)
           if tables else schema.empty_table())
    buffer = pa.BufferOutputStream()
    with pq.ParquetWriter(buffer, schema, compression="zstd",
                          use_dictionary=_DICTIONARY) as writer:
        for group in range(previous.num_row_groups if previous is not None else 0):
            old = surviving(previous.read_row_group(group), keep, new)
            if old.num_rows:
                writer.write_table(old.select(schema.names).cast(schema))
        if new.num_rows:
            writer.write_table(new.cast(schema), row_group_size=ROW_GROUP_ROWS)
    atomic_write(fs, path, buffer.getvalue().to_pybytes())


def read_embeddings(fs, path: str, columns: list[str] | None = None,
                    where: pc.Expression | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``path`` (without ``embedding``) and their embeddings as one
    ``(tracks, size)`` float32 matrix; empty when the file does not exist yet."""
    wanted = None if columns is None else list(dict.fromkeys([*columns, "embedding"]))
    try:
        table = read_parquet(fs, path, wanted, where)
    except FileNotFoundError:
        return pd.DataFrame(columns=[c for c in (columns or KEY) if c != "embedding"]), \
            np.zeros((0, 0), np.float32)
    column = table.column("embedding").combine_chunks()
    size = column.type.list_size
    # the values of a fixed-size list are one contiguous buffer: a view, not a copy per row
    matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), size)
    return table.drop_columns(["embedding"]).to_pandas(), matrix
