"""Track queries: filters over catalog metadata and build status, pushed down to Parquet.

A :class:`TrackQuery` holds the filters. Reading a catalog's ``tracks.parquet`` goes in three
steps, the same for the eager (pandas) and the lazy (dask) path:

1. **prune**: the filters on catalog columns (film, composer, year, and the parts of ``where``
   that read catalog columns only) become one pyarrow expression, tested against each row
   group's min/max statistics, so row groups that cannot match are never read. Catalog tables
   are written clustered by composer, year and film (see ``Store.write_catalog``), which is what
   makes the statistics selective;
2. **scan**: the surviving row groups are read, only the needed columns, filtered row by row
   with the same expression;
3. **join**: the rows are joined with the feature set's build manifest (status, tiles, ...)
   and the remaining filters (labels, status, ``where`` parts reading build columns) applied.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import reduce

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from catalogs.genres import normalize_genre
from catalogs.labels import DEFAULT_LABELS, label_lists
from featurestore.expressions import QueryError, parse_where, quote_names, unquote_names
from featurestore.manifest import KEY, SCHEMA, ManifestLog
from featurestore.statuses import FAILURE_STATUSES, OK, PENDING, REMOVED
from featurestore.urls import filesystem

# Columns a track gets from the build manifest, beside its catalog columns.
BUILD_COLUMNS = ("status", "error", "n_tiles", "duration_s", "source_rate", "channels",
                 "content_hash", "tile_start", "built_at")
#: Every build status a track can have.
STATUSES = (OK, PENDING, REMOVED, *FAILURE_STATUSES)
#: Names a catalog's own columns cannot take: a query adds these to every track.
RESERVED_COLUMNS = ("catalog", "built_path", *BUILD_COLUMNS)


def _strings(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def parse_year_range(value) -> tuple[int | None, int | None] | None:
    """``1965``, ``"1960:1969"``, ``"1960:"``, ``":1969"`` or ``(lo, hi)``, inclusive."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        lo, hi = value
    elif isinstance(value, (int, np.integer)):
        lo = hi = int(value)
    elif isinstance(value, str):
        lo, sep, hi = value.partition(":")
        if not sep:
            hi = lo
        try:
            lo = int(lo) if lo.strip() else None
            hi = int(hi) if hi.strip() else None
        except ValueError:
            raise QueryError(f"year {value!r}: expected YEAR or FROM:TO, e.g. 1960:1969") from None
    else:
        raise QueryError(f"year {value!r}: expected YEAR, 'FROM:TO' or (from, to)")
    if lo is not None and hi is not None and lo > hi:
        raise QueryError(f"year {value!r}: the range is empty ({lo} > {hi})")
    return (lo, hi)


@dataclass(frozen=True)
class TrackQuery:
    """Filters on tracks; every given filter must hold.

    ``film``, ``composer``: one name or several (any of), exact match. ``year``: see
    :func:`parse_year_range`. ``genres`` (any of), ``all_genres``, ``exclude_genres``: label
    names in the ``labels`` column (IMDB aliases accepted when it is ``genres``). ``status``:
    build statuses (``ok``, ``pending``, a failure kind). ``where``: a free predicate over any
    column (see :mod:`featurestore.expressions`).
    """

    film: tuple[str, ...] = ()
    composer: tuple[str, ...] = ()
    year: tuple[int | None, int | None] | None = None
    genres: tuple[str, ...] = ()
    all_genres: tuple[str, ...] = ()
    exclude_genres: tuple[str, ...] = ()
    status: tuple[str, ...] = ()
    where: str | None = None
    labels: str = DEFAULT_LABELS
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(cls, *, film=None, composer=None, year=None, genres=None, all_genres=None,
           exclude_genres=None, status=None, where=None, labels=DEFAULT_LABELS) -> TrackQuery:
        """Build a query from loose arguments (strings or lists)."""
        unknown = [s for s in _strings(status) if s not in STATUSES]
        if unknown:  # a typo would match no track, silently
            raise QueryError(f"status {', '.join(map(repr, unknown))}: choose among "
                             f"{', '.join(STATUSES)}")
        return cls(_strings(film), _strings(composer), parse_year_range(year),
                   _strings(genres), _strings(all_genres), _strings(exclude_genres),
                   _strings(status), where or None, labels)

    def wanted_labels(self) -> set[str]:
        """The labels that ``genres`` and ``all_genres`` ask for, as the column spells them."""
        return self._label_names(self.genres + self.all_genres)

    def _label_names(self, names: tuple[str, ...]) -> set[str]:
        if self.labels == DEFAULT_LABELS:
            return {normalize_genre(n)[0] for n in names}
        return {n.strip() for n in names}

    # -- the where clause, split into the part over catalog columns and the rest ----------

    def _where_parts(self, catalog_columns: list[str]):
        """``(pushed, post)`` expressions of ``where`` (either may be None): top-level ``and``
        terms reading catalog columns only are pushed down to the scan."""
        key = tuple(catalog_columns)
        if key not in self._cache:
            pushed, post = [], []
            if self.where:
                columns = list(catalog_columns) + [c for c in BUILD_COLUMNS
                                                   if c not in catalog_columns]
                for term in _conjuncts(self.where):
                    predicate = parse_where(term, columns)
                    (pushed if predicate.columns <= set(catalog_columns) else post).append(
                        predicate)
            self._cache[key] = (_all(p.expression for p in pushed),
                                _all(p.expression for p in post),
                                set().union(*(p.columns for p in post)) if post else set())
        return self._cache[key]

    def catalog_expression(self, catalog_columns: list[str]) -> pc.Expression | None:
        """The filter over catalog columns, for row-group pruning and the scan."""
        terms = []
        if self.film:
            terms.append(pc.field("film").isin(pa.array(self.film)))
        if self.composer:
            terms.append(pc.field("composer").isin(pa.array(self.composer)))
        if self.year is not None:
            lo, hi = self.year
            if lo is not None:
                terms.append(pc.field("year") >= lo)
            if hi is not None:
                terms.append(pc.field("year") <= hi)
        pushed = self._where_parts(catalog_columns)[0]
        if pushed is not None:
            terms.append(pushed)
        return _all(terms)

    def scan_columns(self, catalog_columns: list[str], wanted: list[str] | None) -> list[str]:
        """The catalog columns a scan must read for ``wanted`` output columns and the filters
        applied after the scan."""
        if wanted is None:
            return list(catalog_columns)
        need = {"track_id", "path"} | set(wanted)
        if self.genres or self.all_genres or self.exclude_genres:
            need.add(self.labels)
        need |= self._where_parts(catalog_columns)[2]
        return [c for c in catalog_columns if c in need]

    def apply_after_join(self, frame: pd.DataFrame, catalog_columns: list[str]) -> pd.DataFrame:
        """Filters that need the build columns or label sets, on a joined frame."""
        keep = np.ones(len(frame), dtype=bool)
        if self.genres or self.all_genres or self.exclude_genres:
            sets = label_lists(frame, self.labels).map(set)
            if self.genres:
                any_of = self._label_names(self.genres)
                keep &= sets.map(lambda s: not s.isdisjoint(any_of)).to_numpy(bool)
            if self.all_genres:
                all_of = self._label_names(self.all_genres)
                keep &= sets.map(lambda s: all_of <= s).to_numpy(bool)
            if self.exclude_genres:
                none_of = self._label_names(self.exclude_genres)
                keep &= sets.map(lambda s: s.isdisjoint(none_of)).to_numpy(bool)
        if self.status:
            keep &= frame["status"].isin(self.status).to_numpy(bool)
        _, post, post_columns = self._where_parts(catalog_columns)
        if post is not None and len(frame):
            table = pa.Table.from_pandas(frame[sorted(post_columns)], preserve_index=False)
            table = table.append_column("__row", pa.array(np.arange(len(frame))))
            hit = np.zeros(len(frame), dtype=bool)
            hit[table.filter(post)["__row"].to_numpy()] = True
            keep &= hit
        return frame[keep] if not keep.all() else frame

    def check_columns(self, catalog: str, catalog_columns: list[str]) -> None:
        """Raise :class:`QueryError` when a filter names a column the catalog lacks."""
        for name, used in (("film", self.film), ("composer", self.composer),
                           ("year", self.year)):
            if used and name not in catalog_columns:
                raise QueryError(f"catalog {catalog!r} has no column {name!r}")
        # a label column named without a label filter is checked too: it would do nothing
        if (self.genres or self.all_genres or self.exclude_genres
                or self.labels != DEFAULT_LABELS) and self.labels not in catalog_columns:
            raise QueryError(f"catalog {catalog!r} has no label column {self.labels!r} "
                             f"(columns: {', '.join(catalog_columns)})")
        self._where_parts(catalog_columns)  # parses: unknown columns raise here


def _conjuncts(text: str) -> list[str]:
    """Top-level ``and`` / ``&`` terms of a where clause, as source texts."""
    source, quoted = quote_names(text.strip())
    try:
        tree = ast.parse(source, mode="eval").body
    except SyntaxError:
        return [text]  # parse_where reports it
    terms: list[ast.AST] = []

    def walk(node: ast.AST) -> None:
        if isinstance(node, ast.BoolOp) and isinstance(node.op, ast.And):
            for value in node.values:
                walk(value)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitAnd):
            walk(node.left)
            walk(node.right)
        else:
            terms.append(node)

    walk(tree)
    return [unquote_names(ast.get_source_segment(source, t), quoted) for t in terms]


def _all(expressions) -> pc.Expression | None:
    expressions = list(expressions)
    return reduce(lambda a, b: a & b, expressions) if expressions else None


# -- scanning --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CatalogPart:
    """Row groups of one catalog table to scan: one dask partition, or a whole eager read."""

    url: str
    storage_options: tuple
    catalog: str
    path: str
    row_groups: tuple[int, ...]
    manifest: str | None = None  # the feature set's manifest folder, whose status is joined


@dataclass
class ScanStats:
    """What a query read: row groups and their compressed bytes, against the table's total."""

    row_groups_read: int = 0
    row_groups_total: int = 0
    bytes_read: int = 0
    bytes_total: int = 0

    def __iadd__(self, other: ScanStats) -> ScanStats:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        return self


def _arrow_fs(url: str, storage_options: dict) -> pafs.FileSystem:
    fs, _ = filesystem(url, storage_options)
    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def catalog_fragment(url: str, storage_options: dict, path: str,
                     row_groups: list[int] | None = None) -> ds.ParquetFileFragment:
    """The catalog table at ``path`` of the store at ``url`` (those row groups only, when
    given); reads nothing until asked."""
    return ds.ParquetFileFormat().make_fragment(path, filesystem=_arrow_fs(url, storage_options),
                                                row_groups=row_groups)


def plan_scan(url: str, storage_options: dict, catalog: str, fragment: ds.ParquetFileFragment,
              expression: pc.Expression | None, columns: list[str], manifest: str | None
              ) -> tuple[CatalogPart, ScanStats]:
    """The row groups of a catalog table whose statistics may satisfy ``expression`` (reads
    the footer only), and what reading them costs."""
    meta = fragment.metadata
    if expression is None:
        groups = list(range(meta.num_row_groups))
    else:
        groups = [rg.row_groups[0].id for rg in fragment.split_by_row_group(expression)]
    names = set(columns)

    def size(i: int) -> int:
        rg = meta.row_group(i)
        return sum(rg.column(j).total_compressed_size for j in range(rg.num_columns)
                   if rg.column(j).path_in_schema.split(".")[0] in names)

    stats = ScanStats(len(groups), meta.num_row_groups, sum(size(i) for i in groups),
                      sum(size(i) for i in range(meta.num_row_groups)))
    part = CatalogPart(url, tuple(sorted(storage_options.items())), catalog, fragment.path,
                       tuple(groups), manifest)
    return part, stats


def build_rows(part: CatalogPart, track_ids) -> pd.DataFrame:
    """The live manifest rows of ``track_ids`` in the part's catalog: ``catalog``,
    ``track_id``, ``built_path`` and :data:`BUILD_COLUMNS` (none without a manifest)."""
    columns = ["path", *BUILD_COLUMNS]
    if part.manifest is None or not len(track_ids):
        frame = pa.schema([SCHEMA.field(c) for c in [*KEY, *columns]]).empty_table().to_pandas()
    else:
        fs, _ = filesystem(part.url, dict(part.storage_options))
        where = (pc.field("catalog") == part.catalog) & pc.field("track_id").isin(
            pa.array(list(track_ids), pa.string()))
        frame = ManifestLog(fs, part.manifest).read(columns=columns, where=where).frame
        frame = frame[frame["status"] != REMOVED]
    return frame.rename(columns={"path": "built_path"})


def read_part(part: CatalogPart, query: TrackQuery, catalog_columns: list[str],
              columns: list[str], output: list[str] | None) -> pd.DataFrame:
    """Scan one part (``columns`` only, rows filtered), join the build columns of its rows
    from the manifest as it is now, apply the remaining filters, keep ``output`` columns (all
    when None)."""
    fragment = catalog_fragment(part.url, dict(part.storage_options), part.path,
                                list(part.row_groups))
    table = fragment.to_table(columns=columns,
                              filter=query.catalog_expression(catalog_columns))
    frame = table.to_pandas()
    frame.insert(0, "catalog", part.catalog)
    frame = join_build(frame, build_rows(part, frame["track_id"]))
    frame = query.apply_after_join(frame, catalog_columns)
    if output is not None:
        frame = frame[[c for c in output if c in frame.columns]]
    return frame.reset_index(drop=True)


def join_build(meta: pd.DataFrame, build: pd.DataFrame) -> pd.DataFrame:
    """Left-join catalog rows with their live manifest rows (``build``: catalog, track_id,
    built_path and :data:`BUILD_COLUMNS`). A track never built, or built from another path than
    the catalog now names, is ``pending`` with no tiles."""
    out = meta.merge(build, on=["catalog", "track_id"], how="left")
    stale = out["status"].isna() | (out["built_path"] != out["path"]).fillna(True)
    out.loc[stale, ["status", "error"]] = [PENDING, ""]
    out.loc[stale, ["n_tiles", "tile_start"]] = [0, -1]
    out = out.drop(columns=["built_path"])
    out["n_tiles"] = out["n_tiles"].fillna(0).astype("int64")
    out["tile_start"] = out["tile_start"].fillna(-1).astype("int64")
    out["error"] = out["error"].fillna("")
    return _text_columns(out)


_TEXT = pd.StringDtype("pyarrow")  # missing values are pd.NA, as in the catalog reader


def _text_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """One string dtype for every text column, whatever its origin (Parquet, merge keys)."""
    for col in frame.columns:
        dtype = frame[col].dtype
        if (isinstance(dtype, pd.StringDtype) and dtype != _TEXT) or col in ("catalog",
                                                                               "track_id"):
            frame[col] = frame[col].astype(_TEXT)
    return frame
