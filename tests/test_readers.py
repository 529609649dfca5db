"""The store is readable without featurestore: pandas, pyarrow, DuckDB, zarr and xarray."""

from __future__ import annotations

import glob
import os
import warnings

import duckdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xarray as xr
import zarr

import featurestore
from featurestore.spec import TileEncoding
from tests.helpers import small_library


@pytest.fixture(scope="module")
def built_store(tmp_path_factory, dask_client):
    root = tmp_path_factory.mktemp("readers")
    lib = small_library(root / "lib", n=5, seconds=20.0)
    url = str(root / "store")
    featurestore.build(lib, url, client=dask_client, progress=False, batch_seconds=1.0)
    return url


def test_parquet_readers(built_store):
    fset_dir = glob.glob(os.path.join(built_store, "features", "*"))[0]
    snapshot = os.path.join(fset_dir, "manifest", "snapshot.parquet")
    catalog = os.path.join(built_store, "catalogs", "catalog", "tracks.parquet")
    manifest = pd.read_parquet(snapshot)
    assert len(manifest) == 5 and set(manifest["status"]) == {"ok"}
    assert {"content_hash", "tile_start", "n_tiles", "built_at", "run_id"} <= set(manifest)
    meta = pq.read_table(catalog).to_pandas()
    assert meta["genres"].iloc[0].tolist() == ["Drama", "Romance"]
    joined = duckdb.sql(f"""
        SELECT c.track_id, c.film, m.n_tiles
        FROM '{catalog}' c JOIN '{snapshot}' m USING (track_id)
        WHERE list_contains(c.genres, 'Drama') ORDER BY c.track_id""").df()
    assert joined["track_id"].tolist() == ["s000", "s004"]
    assert joined["n_tiles"].tolist() == [2, 2]


def test_zarr_and_xarray_read_tiles_with_named_dimensions(built_store):
    fset_dir = glob.glob(os.path.join(built_store, "features", "*"))[0]
    group_path = os.path.join(fset_dir, "tiles.zarr")
    manifest = pd.read_parquet(os.path.join(fset_dir, "manifest", "snapshot.parquet"))
    group = zarr.open_group(group_path, mode="r")
    assert group["mfcc"].metadata.dimension_names == ("tile", "coefficient", "frame")
    ds = xr.open_zarr(group_path)
    assert ds["mfcc"].dims == ("tile", "coefficient", "frame")
    assert ds["coefficient"].values.tolist() == list(range(1, 41))
    ours = featurestore.open(built_store).tiles()
    for row in manifest.itertuples():
        start, n = row.tile_start, row.n_tiles
        raw = group["mfcc"][start:start + n]
        assert (group["entry"][start:start + n] == start).all()
        assert group["offset"][start:start + n].tolist() == list(range(n))
        via_xarray = ds["mfcc"].isel(tile=slice(start, start + n)).values
        via_api = ours.where(ours["track_id"] == row.track_id, drop=True).values
        np.testing.assert_array_equal(raw, via_xarray)
        np.testing.assert_array_equal(raw, via_api)


def test_api_tiles_are_lazy_with_track_coordinates(built_store):
    store = featurestore.open(built_store)
    tracks = store.tracks()
    some = tracks[tracks["track_id"].isin(["s001", "s003"])]
    tiles = store.tiles(some)
    assert hasattr(tiles.data, "dask")  # not loaded
    assert tiles.sizes == {"tile": 4, "coefficient": 40, "frame": 100}
    assert tiles["track_id"].values.tolist() == ["s001", "s001", "s003", "s003"]
    assert tiles["offset"].values.tolist() == [0, 1, 0, 1]
    mean, std, count = store.feature_set().statistics()
    assert mean.shape == std.shape == (40, 100) and count == 10


def test_xarray_opens_the_tiles_by_consolidated_metadata_after_every_build(tmp_path,
                                                                          dask_client):
    """After a build and after an incremental build that grows the arrays, xarray opens the
    tile group without a warning (its metadata is consolidated), at the arrays' real shape:
    every committed tile is inside it."""
    url = str(tmp_path / "store")
    for n in (2, 6):  # the second build adds 4 tracks: 8 more tiles than the 4 slots
        lib = small_library(tmp_path / "lib", n=n, seconds=20.0)
        featurestore.build(lib, url, client=dask_client, progress=False,
                           encoding=TileEncoding(chunk_tiles=2))
        fset = featurestore.open(url).feature_set()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ds = xr.open_zarr(fset.tiles_url)
        live = fset.state().frame.query("status == 'ok'")
        assert len(live) == n
        assert ds.sizes["tile"] == fset.arrays().capacity
        assert ds.sizes["tile"] >= (live["tile_start"] + live["n_tiles"]).max()
        last = live.loc[live["tile_start"].idxmax()]
        np.testing.assert_array_equal(
            ds["mfcc"].isel(tile=slice(last.tile_start, last.tile_start + last.n_tiles)).values,
            fset.arrays().mfcc[last.tile_start:last.tile_start + last.n_tiles])
