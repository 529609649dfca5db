"""The store: opening it, its catalogs and feature sets, and reading tracks and tiles.

``featurestore.open(url)`` gives a :class:`Store`; ``Store.tracks()`` is a pandas DataFrame of
every catalog track with its build status, ``Store.tiles()`` a lazy, dask-backed
``xarray.DataArray`` of the live tiles with the owning track beside each.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import time
import warnings
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa

from catalogs.labels import label_lists
from featurestore import layout
from featurestore.errors import StoreError, StoreLookupError, UnheldLabelWarning
from featurestore.expressions import QueryError
from featurestore.manifest import KEY, ManifestLog, ManifestState, empty_frame
from featurestore.parquet_files import parquet_bytes
from featurestore.query import (BUILD_COLUMNS, CatalogPart, ScanStats, TrackQuery,
                                build_rows, catalog_fragment, join_build, plan_scan,
                                read_part)
from featurestore.spec import ALGORITHM_VERSION, KINDS, FeatureSpec, TileEncoding
from featurestore.statuses import OK, REMOVED
from featurestore.tile_arrays import Moments, TileArrays, TileSource, read_tiles, tile_rows
from featurestore.urls import atomic_write, filesystem, normalize_url


@dataclass
class FeatureSet:
    """One feature set of a store: its spec, encoding, manifest, arrays and statistics."""

    store: Store
    spec: FeatureSpec
    encoding: TileEncoding

    @property
    def hash(self) -> str:
        return self.spec.hash

    @property
    def url(self) -> str:
        return layout.feature_set_dir(self.store.url, self.hash)

    @property
    def tiles_url(self) -> str:
        return layout.tiles_group(self.store.url, self.hash)

    @cached_property
    def manifest(self) -> ManifestLog:
        return ManifestLog(self.store.fs, layout.manifest_dir(self.store.root, self.hash))

    def arrays(self, read_only: bool = True) -> TileArrays:
        return TileArrays.open(self.tiles_url, self.store.storage_options, read_only=read_only)

    def slots(self) -> int:
        """Tile slots the arrays hold (live, replaced and unused), from the tile array's own
        Zarr v3 metadata (its ``zarr.json`` ``shape``): a summary of the store opens no Zarr
        array, whose import alone costs a third of a second."""
        path = f"{layout.tiles_group(self.store.root, self.hash)}/{self.spec.kind}/zarr.json"
        return int(json.loads(self.store.fs.cat_file(path))["shape"][0])

    def _stats_path(self, seq: int) -> str:
        return f"{layout.stats_dir(self.store.root, self.hash)}/{seq:010d}.npz"

    def read_moments(self, seq: int) -> Moments:
        """Per-value moments of the live tiles as of commit ``seq``."""
        shape = self.spec.tile_shape
        if seq == 0:
            return Moments.zeros(shape)
        data = np.load(io.BytesIO(self.store.fs.cat_file(self._stats_path(seq))))
        return Moments(int(data["count"]), data["total"], data["squares"])

    def write_moments(self, seq: int, moments: Moments) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, count=moments.count, total=moments.total, squares=moments.squares)
        atomic_write(self.store.fs, self._stats_path(seq), buffer.getvalue())

    def prune_moments(self, keep_seq: int) -> None:
        """Delete statistics of commits before ``keep_seq`` (after a compaction)."""
        directory = layout.stats_dir(self.store.root, self.hash)
        for name in self.store.fs.ls(directory, detail=False) if self.store.fs.exists(
                directory) else []:
            base = name.rsplit("/", 1)[-1]
            if base.endswith(".npz") and base[:-4].isdigit() and int(base[:-4]) < keep_seq:
                self.store.fs.rm_file(name)

    def state(self, columns: list[str] | None = None) -> ManifestState:
        """The manifest as committed now; ``columns`` (beside the key) read less."""
        return self.manifest.read(columns=columns)

    def statistics(self) -> tuple[np.ndarray, np.ndarray, int]:
        """``(mean, std, n_tiles)`` per value over the live tiles, kept current by every build.
        For standardization: ``(tile - mean) / std``."""
        for _ in range(20):
            state = self.state()
            try:
                moments = self.read_moments(state.seq)
            except FileNotFoundError:
                time.sleep(0.05)  # pruned by a compaction after we read the manifest
                continue
            return (moments.mean.astype(np.float32), moments.std.astype(np.float32),
                    moments.count)
        raise StoreError(f"{self.url}: statistics kept changing while being read")


class Store:
    """A feature store at a local path or fsspec URL. Use :func:`featurestore.open`."""

    def __init__(self, url: str, storage_options: dict | None = None):
        if not str(url).strip():  # would be the working directory
            raise ValueError("the store's path or URL is empty")
        self.url = normalize_url(url)
        self.storage_options = dict(storage_options or {})
        self.fs, self.root = filesystem(self.url, self.storage_options)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- creation and checks -------------------------------------------------------------

    def exists(self) -> bool:
        return self.fs.exists(layout.store_meta(self.root))

    def check_layout(self) -> None:
        """Raise :class:`StoreError` unless this is a store of a layout this code reads."""
        path = layout.store_meta(self.root)
        try:
            meta = json.loads(self.fs.cat_file(path))
        except (FileNotFoundError, NotADirectoryError):
            raise StoreError(f"{self.url} is not a feature store (no featurestore.json)") from None
        except ValueError as exc:
            raise StoreError(f"{path} is not valid JSON: {exc}") from None
        if meta.get("format") != layout.FORMAT_NAME:
            raise StoreError(f"{path}: not a featurestore store (format {meta.get('format')!r})")
        version = meta.get("layout_version")
        if version != layout.LAYOUT_VERSION:
            raise StoreError(f"{self.url} has store layout version {version}; this featurestore "
                             f"reads version {layout.LAYOUT_VERSION}")

    def initialize(self) -> None:
        """Create the store's marker file if the store is new; check its layout if not."""
        if self.exists():
            self.check_layout()
            return
        if self.fs.isfile(self.root):
            raise StoreError(f"{self.url} is a file, not a feature store")
        if self.fs.isdir(self.root) and self.fs.ls(self.root, detail=False):
            raise StoreError(f"{self.url} holds other files and is not a feature store (no "
                             "featurestore.json): give a new or empty folder")
        atomic_write(self.fs, layout.store_meta(self.root), json.dumps({
            "format": layout.FORMAT_NAME, "layout_version": layout.LAYOUT_VERSION,
            "created": pd.Timestamp.now(tz="UTC").isoformat()}, indent=2).encode())

    # -- feature sets --------------------------------------------------------------------

    def feature_set_hashes(self) -> list[str]:
        directory = layout.features_dir(self.root)
        if not self.fs.exists(directory):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1]
                      for p in self.fs.ls(directory, detail=False)
                      if self.fs.exists(f"{p.rstrip('/')}/spec.json"))

    def _load_feature_set(self, spec_hash: str) -> FeatureSet:
        path = layout.spec_file(self.root, spec_hash)
        try:
            data = json.loads(self.fs.cat_file(path))
            spec = FeatureSpec.from_dict(data["spec"])
            encoding = TileEncoding(**data.get("encoding", {}))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path} is not a feature spec this featurestore reads ({exc}): "
                             "the feature set was written by a different version") from None
        if spec.hash != spec_hash:
            raise StoreError(f"{path} describes feature set {spec.hash}, not {spec_hash}: the "
                             "feature set was written by a different featurestore version")
        return FeatureSet(self, spec, encoding)

    def feature_sets(self, unreadable: list | None = None) -> list[FeatureSet]:
        """Every feature set this code reads. The others (another version's) are left out and,
        given a list ``unreadable``, appended to it as ``(hash, reason)``."""
        out = []
        for spec_hash in self.feature_set_hashes():
            try:
                out.append(self._load_feature_set(spec_hash))
            except StoreError as exc:
                if unreadable is not None:
                    unreadable.append((spec_hash, str(exc)))
        return out

    def feature_set(self, spec: FeatureSpec | str | None = None) -> FeatureSet:
        """The feature set of ``spec``: a spec, its hash, or a kind (``mfcc``, ``logmel``: the
        store's only set of that kind, or that kind's default spec when there are several);
        with no argument, the only one, or the default spec's when there are several."""
        self.check_layout()
        hashes = self.feature_set_hashes()
        if isinstance(spec, FeatureSpec):
            wanted = spec.hash
        elif isinstance(spec, str) and spec in KINDS:
            wanted = self._of_kind(spec, hashes)
        elif isinstance(spec, str):
            wanted = spec
        elif len(hashes) == 1:
            wanted = hashes[0]
        elif FeatureSpec().hash in hashes:
            wanted = FeatureSpec().hash
        elif not hashes:
            raise StoreError(f"{self.url} holds no feature set yet: run `featurestore build`")
        else:
            raise StoreLookupError(
                f"{self.url} holds several feature sets ({', '.join(hashes)}), none of them the "
                "default spec's: name one (--feature-set, or feature_set=; a hash, or mfcc / "
                "logmel)")
        if wanted not in hashes:
            raise StoreLookupError(f"{self.url} has no feature set {wanted} (it has: "
                                   f"{', '.join(hashes) or 'none'})")
        return self._load_feature_set(wanted)

    def _of_kind(self, kind: str, hashes: list[str]) -> str:
        """The hash that the kind name ``kind`` stands for (see :meth:`feature_set`)."""
        of_kind = [h for h in hashes if self._load_feature_set(h).spec.kind == kind]
        if len(of_kind) == 1:
            return of_kind[0]
        if FeatureSpec(kind=kind).hash in of_kind:
            return FeatureSpec(kind=kind).hash
        if not of_kind:
            raise StoreLookupError(f"{self.url} holds no {kind} feature set (it has: "
                                   f"{', '.join(hashes) or 'none'}): build one with --kind {kind}")
        raise StoreLookupError(f"{self.url} holds several {kind} feature sets "
                               f"({', '.join(of_kind)}); name one by its hash")

    def create_feature_set(self, spec: FeatureSpec, encoding: TileEncoding) -> FeatureSet:
        """Create the feature set of ``spec`` if new (spec file, arrays); return it."""
        if spec.hash in self.feature_set_hashes():
            fset = self._load_feature_set(spec.hash)
        else:
            fset = FeatureSet(self, spec, encoding)
            TileArrays.create(fset.tiles_url, spec, encoding, self.storage_options)
            atomic_write(self.fs, layout.spec_file(self.root, spec.hash), json.dumps(
                {"hash": spec.hash, "spec": spec.to_dict(), "algorithm_version": ALGORITHM_VERSION,
                 "encoding": encoding.__dict__}, indent=2).encode())
        return fset

    # -- catalogs ------------------------------------------------------------------------

    def catalog_names(self) -> list[str]:
        directory = layout.catalogs_dir(self.root)
        if not self.fs.exists(directory):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(directory, detail=False)
                      if self.fs.exists(f"{p.rstrip('/')}/tracks.parquet"))

    # Catalog tables are clustered by these columns in row groups of this many rows, so that
    # min/max statistics let a filter on them skip most of the file.
    CLUSTER_BY = ("composer", "year", "film", "track_id")
    ROW_GROUP_ROWS = 4096

    def write_catalog(self, name: str, frame: pd.DataFrame) -> None:
        order = [c for c in self.CLUSTER_BY if c in frame.columns]
        frame = frame.sort_values(order, na_position="last", kind="stable")
        atomic_write(self.fs, layout.catalog_table(self.root, name),
                     parquet_bytes(_parquet_safe(frame), row_group_size=self.ROW_GROUP_ROWS))

    # -- reading -------------------------------------------------------------------------

    def _plan(self, catalog: str | None, query: TrackQuery, columns: list[str] | None,
              feature_set=None):
        """Per catalog: ``(part, catalog columns, scan columns, stats)``."""
        manifest = (layout.manifest_dir(self.root, self.feature_set(feature_set).hash)
                    if feature_set is not False and self.feature_set_hashes() else None)
        names = self.catalog_names()
        if catalog is not None and catalog not in names:
            raise StoreLookupError(f"{self.url} has no catalog {catalog!r} (it has: "
                                   f"{', '.join(names) or 'none'})")
        plans = []
        for name in [catalog] if catalog else names:
            fragment = catalog_fragment(self.url, self.storage_options,
                                        layout.catalog_table(self.root, name))
            catalog_columns = list(fragment.physical_schema.names)
            if columns is not None:
                unknown = sorted(set(columns) - set(catalog_columns) - set(BUILD_COLUMNS)
                                 - {"catalog"})
                if unknown:
                    raise QueryError(self._unknown_columns(name, names, unknown,
                                                           catalog_columns))
            query.check_columns(name, catalog_columns)
            scan_columns = query.scan_columns(catalog_columns, columns)
            part, stats = plan_scan(self.url, self.storage_options, name, fragment,
                                    query.catalog_expression(catalog_columns), scan_columns,
                                    manifest)
            plans.append((part, catalog_columns, scan_columns, stats))
        return plans

    def _unknown_columns(self, name: str, names: list[str], unknown: list[str],
                         catalog_columns: list[str]) -> str:
        """Why ``unknown`` columns cannot be read from catalog ``name``: no catalog has them,
        or only other catalogs of the store do."""
        holders = [other for other in names if other != name and set(unknown) <= set(
            catalog_fragment(self.url, self.storage_options,
                             layout.catalog_table(self.root, other)).physical_schema.names)]
        listed = ", ".join(map(repr, unknown))
        if holders:
            return (f"catalog {name!r} has no column(s) {listed}; catalog(s) "
                    f"{', '.join(map(repr, holders))} have them: choose one (--catalog, or "
                    "catalog=)")
        return (f"unknown column(s) {listed} (columns: "
                f"{', '.join(catalog_columns + list(BUILD_COLUMNS))})")

    def explain(self, catalog: str | None = None, columns: list[str] | None = None,
                **filters) -> ScanStats:
        """What ``tracks(...)`` with these filters would read: row groups and compressed
        bytes after statistics pruning, against the whole tables. Reads footers only."""
        query = TrackQuery.of(**filters)
        total = ScanStats()
        for *_, stats in self._plan(catalog, query, columns):
            total += stats
        return total

    def tracks(self, catalog: str | None = None, feature_set: FeatureSpec | str | None = None,
               include_removed: bool = False, *, lazy: bool = False,
               columns: list[str] | None = None, **filters):
        """One row per catalog track, filtered: ``catalog``, ``track_id``, the catalog's
        metadata columns, and the build's ``status`` (``ok``, ``pending``, ``removed`` or a
        failure kind), ``error`` (empty when fine), ``n_tiles``, ``duration_s``,
        ``source_rate`` and ``channels`` (as decoded), ``content_hash``, ``tile_start`` and
        ``built_at``.

        Parameters
        ----------
        catalog : str, optional
            One catalog; default all of the store's.
        feature_set : FeatureSpec or str, optional
            Whose build status to join (default: see :meth:`feature_set`).
        include_removed : bool
            Add tracks marked removed (no catalog metadata; only ``status`` filters them).
            A ``status`` filter that names ``removed`` adds them too.
        lazy : bool
            Return a dask DataFrame, one partition per surviving row group, read when computed.
        columns : list of str, optional
            Output columns (``catalog`` and ``track_id`` always come); fewer columns read less.
        **filters
            ``film``, ``composer``, ``year`` (``1965``, ``"1960:1969"``, ``(lo, hi)``),
            ``genres`` (any of), ``all_genres``, ``exclude_genres``, ``labels`` (the label
            column those apply to, default ``genres``), ``status``, ``where`` (an expression,
            see :mod:`featurestore.expressions`). Filters on catalog columns are pushed down to
            the Parquet scan; see :mod:`featurestore.query`.

        Rows come catalog by catalog, in each table's stored order (clustered by composer,
        year, film and track id).
        """
        self.check_layout()
        query = TrackQuery.of(**filters)
        # asked for by status, removed tracks are asked for (`tracks --status removed`)
        include_removed = include_removed or REMOVED in (query.status or ())
        columns = [columns] if isinstance(columns, str) else columns  # one column, not letters
        with _where_types(query):
            out = self._tracks(query, catalog, feature_set, include_removed, lazy, columns)
        if not lazy and out.empty and (query.wanted_labels() or query.film or query.composer):
            self._warn_unheld(query, catalog, feature_set)
        return out

    def _warn_unheld(self, query: TrackQuery, catalog: str | None, feature_set) -> None:
        """An :class:`UnheldLabelWarning` for each asked-for label, film or composer that no
        track holds (a film or composer with the closest one held, if any is close)."""
        # the asked-for columns only: the query's own checks found them in every catalog
        named = [column for column in ("film", "composer") if getattr(query, column)]
        everything = self._tracks(TrackQuery.of(labels=query.labels), catalog, feature_set,
                                  False, False,
                                  ([query.labels] if query.wanted_labels() else []) + named)
        whose = f" of catalog {catalog!r}" if catalog else ""
        if query.wanted_labels():
            held = set(label_lists(everything, query.labels).explode().dropna())
            for label in sorted(query.wanted_labels() - held):
                warnings.warn(f"no track{whose} has the label {label!r} in column "
                              f"{query.labels!r}", UnheldLabelWarning, stacklevel=3)
        for column in named:
            held = set(everything[column].dropna().astype(str))
            for value in sorted(set(getattr(query, column)) - held):
                close = difflib.get_close_matches(value, sorted(held), n=1)
                warnings.warn(f"no track{whose} has {column} {value!r}"
                              f"{f' (did you mean {close[0]!r}?)' if close else ''}",
                              UnheldLabelWarning, stacklevel=3)

    def _tracks(self, query: TrackQuery, catalog, feature_set, include_removed: bool,
                lazy: bool, columns: list[str] | None):
        plans = self._plan(catalog, query, columns, feature_set)
        output = None if columns is None else ["catalog", "track_id"] + [
            c for c in columns if c not in ("catalog", "track_id")]
        if lazy:
            import dask
            import dask.dataframe as dd

            meta = _concat([read_part(replace(part, row_groups=()), query, cat_cols, scan_cols,
                                      output)
                            for part, cat_cols, scan_cols, _ in plans])
            # not pure: each computation reads the manifest as it is then
            read = dask.delayed(read_part, pure=False)
            pieces = [dask.delayed(_conform, pure=True)(
                          read(replace(part, row_groups=(g,)), query, cat_cols, scan_cols,
                               output), list(meta.columns))
                      for part, cat_cols, scan_cols, _ in plans for g in part.row_groups]
            # dask would otherwise turn list columns (genres) into their repr strings
            with dask.config.set({"dataframe.convert-string": False}):
                if not pieces:
                    return dd.from_pandas(meta, npartitions=1)
                return dd.from_delayed(pieces, meta=meta, verify_meta=False)
        frames = [read_part(part, query, cat_cols, scan_cols, output)
                  for part, cat_cols, scan_cols, _ in plans]
        out = _concat(frames)
        if include_removed:
            state = (self.feature_set(feature_set).state().frame
                     if self.feature_set_hashes() else empty_frame())
            gone = state[state["status"] == REMOVED]
            if catalog:
                gone = gone[gone["catalog"] == catalog]
            if query.status:
                gone = gone[gone["status"].isin(query.status)]
            gone = gone[[c for c in ["catalog", "track_id", "path", *BUILD_COLUMNS]
                         if output is None or c in output]]
            out = pd.concat([out, gone], ignore_index=True)
        return out

    def tiles(self, tracks=None, feature_set: FeatureSpec | str | None = None, **filters):
        """The live tiles of ``tracks`` in the frame's order, as a lazy ``xarray.DataArray``
        with dims ``(tile, coefficient, frame)`` and coordinates ``catalog``, ``track_id`` and
        ``offset`` (the tile's position in its track). ``tracks`` is a frame with ``catalog``
        and ``track_id`` columns, such as one from :meth:`tracks` (pandas or dask): its tracks'
        tiles are looked up in this feature set's manifest, and tracks with no live tiles
        there are left out. Without it, the ``ok`` tracks matching ``filters`` (the same as
        :meth:`tracks` takes). Only the Zarr chunks holding the selected tiles are read, and
        only when computed."""
        import dask
        import dask.array as da
        import xarray as xr

        fset = self.feature_set(feature_set)
        if tracks is None:
            tracks = self.tracks(feature_set=fset.hash, status=OK,
                                 columns=["status", "n_tiles", "tile_start"], **filters)
        elif filters:
            raise TypeError("give either a tracks frame or filters, not both")
        else:
            tracks = _live_slots(fset, tracks)
        tracks = tracks[tracks["status"] == OK]
        counts = tracks["n_tiles"].to_numpy(dtype=np.int64)
        starts = tracks["tile_start"].to_numpy(dtype=np.int64)
        index, offsets = tile_rows(starts, counts)
        source = TileSource(fset.tiles_url, self.storage_options)
        shape = fset.spec.tile_shape
        # One task per run of _TILES_PER_TASK selected tiles, each reading only its chunks.
        read = dask.delayed(read_tiles, pure=False)
        parts = [da.from_delayed(read(source, rows), (len(rows), *shape), np.float32)
                 for rows in np.split(index, range(_TILES_PER_TASK, len(index), _TILES_PER_TASK))
                 if len(rows)]
        lazy = da.concatenate(parts) if parts else da.zeros((0, *shape), dtype=np.float32)
        return xr.DataArray(
            lazy, dims=("tile", "coefficient", "frame"),
            coords={"catalog": ("tile", np.repeat(tracks["catalog"].to_numpy(object), counts)),
                    "track_id": ("tile", np.repeat(tracks["track_id"].to_numpy(object), counts)),
                    "offset": ("tile", offsets.astype(np.int32)),
                    "coefficient": np.asarray(fset.spec.coefficients),
                    "frame": np.arange(fset.spec.tile_frames)},
            name=fset.spec.kind, attrs={"feature_set": fset.hash, "tile_seconds": fset.spec.tile_seconds})


#: Selected tiles per task of :meth:`Store.tiles`'s lazy array (16 MiB of the default tiles).
_TILES_PER_TASK = 1024


def _live_slots(fset: FeatureSet, tracks) -> pd.DataFrame:
    """The frame's tracks, in its order, with their build columns as this feature set's
    manifest has them now: a frame's own ``tile_start`` may come from another feature set,
    another store or an earlier build, and would point at other tiles."""
    missing = [c for c in KEY if c not in tracks.columns]
    if missing:
        raise QueryError(f"the tracks frame has no {' or '.join(missing)} column: give a frame "
                         f"from Store.tracks()")
    keys = tracks[KEY]
    if not isinstance(keys, pd.DataFrame):  # a dask DataFrame
        keys = keys.compute()
    state = fset.state(columns=["status", "n_tiles", "tile_start"]).frame
    return (keys.astype(object).reset_index(drop=True)
            .merge(state.astype({k: object for k in KEY}), on=KEY, how="left",
                   validate="many_to_one"))


@contextlib.contextmanager
def _where_types(query: TrackQuery):
    """A ``where`` comparing values of other types (``year > '1990'``, a list column with a
    string) is the user's error: say so, naming the expression, not in pyarrow's words."""
    try:
        yield
    except (pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        if not query.where:
            raise
        said = str(exc).splitlines()[0]
        types = said.rpartition("input types (")[2].rstrip(")")
        if "list<" in types:
            hint = ("a list column (genres, say) holds several values and is not compared "
                    "with one: filter labels with --genre, --all-genres or --exclude-genre "
                    "(--labels COLUMN for another list column)")
        elif "string" in types and any(n in types for n in ("int", "float", "double")):
            hint = ("a number is compared with text: numbers without quotes (year > 1990), "
                    "text in quotes (film == 'Alien')")
        else:
            hint = said
        raise QueryError(f"--where {query.where!r}: the types do not fit: {hint}") from None


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Catalogs' frames as one (the union of their columns); a store with no catalog yet
    gives an empty frame with the key and build columns."""
    if not frames:
        empty = pd.DataFrame({c: pd.Series(dtype="string")
                              for c in ("catalog", "track_id", "path")})
        no_part = CatalogPart("memory://", (), "", "", ())
        return join_build(empty, build_rows(no_part, []))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _conform(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A partition with the lazy frame's columns (catalogs may differ in their extra columns)."""
    return frame if list(frame.columns) == columns else frame.reindex(columns=columns)


def _parquet_safe(frame: pd.DataFrame) -> pd.DataFrame:
    """Free-form catalog columns of mixed types become strings so Parquet can hold them."""
    out = frame.copy()
    for col in out.columns:
        if col == "genres":
            continue
        try:
            pa.array(out[col], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            out[col] = out[col].map(lambda v: None if v is None or v is pd.NA
                                    or (isinstance(v, float) and np.isnan(v)) else str(v))
    return out


def open(url: str, storage_options: dict | None = None) -> Store:  # noqa: A001
    """Open the store at ``url`` (a path, ``file://``, ``s3://``, ``memory://`` ...)."""
    store = Store(url, storage_options)
    store.check_layout()
    return store
