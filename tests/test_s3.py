"""A store on an S3-compatible server (moto, on loopback): build, incremental rebuild, queries,
tiles, info and the command line, answering as a local store does."""

from __future__ import annotations

import json
import subprocess

import numpy as np

import featurestore
from featurestore.info import store_info
from tests.conftest import cli, small_library


def test_s3_store_builds_and_answers_like_a_local_one(tmp_path, s3_bucket, dask_client):
    bucket, options = s3_bucket
    lib = small_library(tmp_path / "lib", n=6, seconds=12.0)
    url = f"{bucket}/store"
    report = featurestore.build(lib, url, client=dask_client, storage_options=options,
                                progress=False)
    assert report.exit_code == 0 and report.built == 6
    local_url = str(tmp_path / "local")
    featurestore.build(lib, local_url, client=dask_client, progress=False)
    again = featurestore.build(lib, url, client=dask_client, storage_options=options,
                               progress=False)
    assert again.built == 0 and again.unchanged == 6  # ETags and sizes: nothing to do

    remote, local = featurestore.open(url, options), featurestore.open(local_url)
    for filters in ({}, {"genres": "Drama"}, {"year": "1962:1964"}, {"film": "Film 1"},
                    {"where": "n_tiles == 1 and year >= 1963"}):
        a = remote.tracks(**filters)
        b = local.tracks(**filters)
        assert list(a["track_id"]) == list(b["track_id"]) and len(a) > 0, filters
        assert list(remote.tracks(lazy=True, **filters).compute()["track_id"]) == list(
            a["track_id"])
    np.testing.assert_array_equal(remote.tiles(genres="Drama").values,
                                  local.tiles(genres="Drama").values)
    mean, std, n = remote.feature_set().statistics()
    assert n == 6 and np.allclose(mean, local.feature_set().statistics()[0], atol=1e-4)
    info = store_info(remote)
    assert info["tracks"] == 6 and info["tiles"] == 6 and info["bytes"] > 0

    endpoint = options["client_kwargs"]["endpoint_url"]
    res = subprocess.run(cli("tracks", "--store", url, "--genre", "Comedy", "--format", "json",
                             "--storage-option", f"client_kwargs.endpoint_url={endpoint}",
                             "--storage-option", "key=test", "--storage-option", "secret=test"),
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert [json.loads(line)["track_id"] for line in res.stdout.splitlines()] == list(
        local.tracks(genres="Comedy")["track_id"])
