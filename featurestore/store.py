"""The store: opening it, its catalogs and feature sets, and reading tracks and tiles.

``featurestore.open(url)`` gives a :class:`Store`; ``Store.tracks()`` is a pandas DataFrame of
every catalog track with its build status, ``Store.tiles()`` a lazy, dask-backed
``xarray.DataArray`` of the live tiles with the owning track beside each.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from featurestore import layout
from featurestore.errors import OK, PENDING, REMOVED, StoreError
from featurestore.manifest import ManifestLog, ManifestState, empty_frame
from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.tile_arrays import Moments, TileArrays
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

    def state(self) -> ManifestState:
        return self.manifest.read()

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
        except FileNotFoundError:
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
        data = json.loads(self.fs.cat_file(path))
        spec = FeatureSpec.from_dict(data["spec"])
        if spec.hash != spec_hash:
            raise StoreError(f"{path} describes feature set {spec.hash}, not {spec_hash}: the "
                             "feature set was written by a different featurestore version")
        return FeatureSet(self, spec, TileEncoding(**data.get("encoding", {})))

    def feature_sets(self) -> list[FeatureSet]:
        return [self._load_feature_set(h) for h in self.feature_set_hashes()]

    def feature_set(self, spec: FeatureSpec | str | None = None) -> FeatureSet:
        """The feature set of ``spec`` (a spec or its hash); with no argument, the only one,
        or the default spec's when there are several."""
        self.check_layout()
        hashes = self.feature_set_hashes()
        if isinstance(spec, FeatureSpec):
            wanted = spec.hash
        elif isinstance(spec, str):
            wanted = spec
        elif len(hashes) == 1:
            wanted = hashes[0]
        elif FeatureSpec().hash in hashes:
            wanted = FeatureSpec().hash
        elif not hashes:
            raise StoreError(f"{self.url} holds no feature set yet: run `featurestore build`")
        else:
            raise StoreError(f"{self.url} holds several feature sets ({', '.join(hashes)}); "
                             "name one")
        if wanted not in hashes:
            raise StoreError(f"{self.url} has no feature set {wanted} (it has: "
                             f"{', '.join(hashes) or 'none'})")
        return self._load_feature_set(wanted)

    def create_feature_set(self, spec: FeatureSpec, encoding: TileEncoding) -> FeatureSet:
        """Create the feature set of ``spec`` if new (spec file, arrays); return it."""
        if spec.hash in self.feature_set_hashes():
            fset = self._load_feature_set(spec.hash)
        else:
            fset = FeatureSet(self, spec, encoding)
            TileArrays.create(fset.tiles_url, spec, encoding, self.storage_options)
            atomic_write(self.fs, layout.spec_file(self.root, spec.hash), json.dumps(
                {"hash": spec.hash, "spec": spec.to_dict(),
                 "encoding": encoding.__dict__}, indent=2).encode())
        return fset

    # -- catalogs ------------------------------------------------------------------------

    def catalog_names(self) -> list[str]:
        directory = layout.catalogs_dir(self.root)
        if not self.fs.exists(directory):
            return []
        return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(directory, detail=False)
                      if self.fs.exists(f"{p.rstrip('/')}/tracks.parquet"))

    def catalog_frame(self, name: str) -> pd.DataFrame:
        """A catalog's metadata as last built: one row per track, as given (paths resolved)."""
        path = layout.catalog_table(self.root, name)
        frame = pq.read_table(io.BytesIO(self.fs.cat_file(path))).to_pandas()
        frame.insert(0, "catalog", name)
        return frame

    def write_catalog(self, name: str, frame: pd.DataFrame) -> None:
        table = pa.Table.from_pandas(_parquet_safe(frame), preserve_index=False)
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        atomic_write(self.fs, layout.catalog_table(self.root, name), buffer.getvalue())

    # -- reading -------------------------------------------------------------------------

    def tracks(self, catalog: str | None = None, feature_set: FeatureSpec | str | None = None,
               include_removed: bool = False) -> pd.DataFrame:
        """One row per catalog track: ``catalog``, ``track_id``, the catalog's metadata columns,
        and the build's ``status`` (``ok``, ``pending``, ``removed`` or a failure kind),
        ``error`` (empty when fine), ``n_tiles``, ``duration_s``, ``content_hash``,
        ``tile_start`` and ``built_at``."""
        self.check_layout()
        names = [catalog] if catalog else self.catalog_names()
        frames = [self.catalog_frame(n) for n in names]
        meta = (pd.concat(frames, ignore_index=True) if frames
                else pd.DataFrame({"catalog": pd.Series(dtype="string"),
                                   "track_id": pd.Series(dtype="string"),
                                   "path": pd.Series(dtype="string")}))
        state = (self.feature_set(feature_set).state().frame if self.feature_set_hashes()
                 else empty_frame())
        if catalog:
            state = state[state["catalog"] == catalog]
        build = state[["catalog", "track_id", "path", "status", "error", "n_tiles", "duration_s",
                       "content_hash", "tile_start", "built_at"]].rename(
                           columns={"path": "built_path"})
        out = meta.merge(build[build["status"] != REMOVED], on=["catalog", "track_id"],
                         how="left")
        # A row built from another path than the catalog now names is not current.
        stale = out["status"].isna() | (out["built_path"] != out["path"]).fillna(True)
        out.loc[stale, ["status", "error"]] = [PENDING, ""]
        out.loc[stale, ["n_tiles", "tile_start"]] = [0, -1]
        if include_removed:
            gone = build[build["status"] == REMOVED].rename(columns={"built_path": "path"})
            out = pd.concat([out, gone], ignore_index=True)
        out = out.drop(columns=["built_path"])
        out["n_tiles"] = out["n_tiles"].fillna(0).astype("int64")
        out["tile_start"] = out["tile_start"].fillna(-1).astype("int64")
        out["error"] = out["error"].fillna("")
        return out.reset_index(drop=True)

    def tiles(self, tracks: pd.DataFrame | None = None,
              feature_set: FeatureSpec | str | None = None):
        """The live tiles of ``tracks`` (default: every ``ok`` track), in the frame's order, as a
        lazy ``xarray.DataArray`` with dims ``(tile, coefficient, frame)`` and coordinates
        ``catalog``, ``track_id`` and ``offset`` (the tile's position in its track). Nothing is
        read until computed."""
        import dask.array as da
        import xarray as xr

        fset = self.feature_set(feature_set)
        if tracks is None:
            tracks = self.tracks(feature_set=fset.hash)
        tracks = tracks[tracks["status"] == OK]
        counts = tracks["n_tiles"].to_numpy(dtype=np.int64)
        starts = tracks["tile_start"].to_numpy(dtype=np.int64)
        index = (np.concatenate([np.arange(s, s + c) for s, c in zip(starts, counts)])
                 if len(counts) else np.zeros(0, dtype=np.int64))
        arrays = fset.arrays()
        lazy = da.from_zarr(arrays.mfcc)[index] if len(index) else da.zeros(
            (0, *fset.spec.tile_shape), dtype=np.float32)
        offsets = np.concatenate([np.arange(c) for c in counts]) if len(counts) else index
        return xr.DataArray(
            lazy, dims=("tile", "coefficient", "frame"),
            coords={"catalog": ("tile", np.repeat(tracks["catalog"].to_numpy(object), counts)),
                    "track_id": ("tile", np.repeat(tracks["track_id"].to_numpy(object), counts)),
                    "offset": ("tile", offsets.astype(np.int32)),
                    "coefficient": np.arange(fset.spec.drop_first, fset.spec.n_mfcc),
                    "frame": np.arange(fset.spec.tile_frames)},
            name="mfcc", attrs={"feature_set": fset.hash, "tile_seconds": fset.spec.tile_seconds})


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
