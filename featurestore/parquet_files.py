"""Parquet files of the store, written and read whole: the one way the store's manifest,
catalog tables, scores and model frames become bytes (zstd) and come back.

Whole-file reads make a reader see one version of a file that a writer replaces atomically
(:func:`featurestore.urls.atomic_write`), on local disks and object stores alike.
"""

from __future__ import annotations

import io

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq


def parquet_bytes(frame: pd.DataFrame, schema: pa.Schema | None = None,
                  metadata: dict | None = None, row_group_size: int | None = None) -> bytes:
    """``frame`` as Parquet bytes: with ``schema``, exactly its columns and types; with
    ``metadata``, those key-value pairs in the file's schema."""
    if schema is not None:
        table = pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    if metadata:
        table = table.replace_schema_metadata(metadata)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", row_group_size=row_group_size)
    return buffer.getvalue()


def read_parquet(fs: fsspec.AbstractFileSystem, path: str, columns: list[str] | None = None,
                 where: pc.Expression | None = None, schema: pa.Schema | None = None
                 ) -> pa.Table:
    """The table at ``path``, read in one piece (``columns`` and ``where`` applied in the
    scan). With ``schema``, read as that schema: a column the file lacks (a file written
    before the column was added) reads as nulls; the file's key-value metadata is kept.
    Raises FileNotFoundError when there is none."""
    data = pa.py_buffer(fs.cat_file(path))
    table = pq.read_table(pa.BufferReader(data), columns=columns, filters=where, schema=schema)
    if schema is not None:
        table = table.replace_schema_metadata(pq.read_schema(pa.BufferReader(data)).metadata)
    return table
