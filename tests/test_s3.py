"""A store on an S3-compatible server (moto, on loopback): build, incremental rebuild, queries,
tiles, info and the command line, answering as a local store does."""

from __future__ import annotations

import json
import subprocess

import numpy as np

import featurestore
from featurestore.info import store_info
from scoring.score_tables import score_table, tile_scores
from tests.helpers import cli, copy_demo_library, run_cli, small_library


def test_s3_store_builds_and_answers_like_a_local_one(tmp_path, s3_bucket, dask_client,
                                                      capsys):
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
    # a misspelt option, which s3fs would keep unused, is refused with the one it resembles
    res = run_cli(capsys, "tracks", "--store", url, "--storage-option",
                  f"client_kwargs.endpoint_url={endpoint}", "--storage-option", "key=test",
                  "--storage-option", "secrett=test")
    assert res.returncode == 2 and not res.stdout
    assert ("storage option 'secrett' is not one that S3FileSystem takes, for "
            f"{url} (did you mean 'secret'?)") in res.stderr


def test_s3_whole_flow_build_train_score_evaluate(tmp_path, s3_bucket, dask_client,
                                                  demo_library):
    """Audio, catalog and store all on the S3 server: build, train reading tiles lazily
    (memory budget 0), score on the worker processes, rankings and evaluation."""
    import s3fs
    import torch

    from scoring import best_tracks, evaluate, score, write_report
    from training import TrainConfig, train
    from training.model_files import ModelFiles

    bucket, options = s3_bucket
    copy_demo_library(demo_library, tmp_path / "lib", n_tracks=24)
    fs = s3fs.S3FileSystem(**options)
    fs.put(str(tmp_path / "lib"), f"{bucket}/lib", recursive=True)
    url = f"{bucket}/store"
    report = featurestore.build(f"{bucket}/lib/catalog.csv", url, name="demo",
                                client=dask_client, storage_options=options, progress=False)
    assert report.exit_code == 0 and report.built == 24
    assert featurestore.open(url, options).tracks()["path"].str.startswith("s3://").all()

    config = TrainConfig(arch="ensemble", epochs=2, optimizer="adam", learning_rate=1e-3,
                         min_tracks=5, test_size=0.25, memory_budget_mb=0, device="cpu")
    trained = train(url, "ens", config, storage_options=options, progress=False)
    # read lazily, the members trained one by one (the fused ensemble needs tiles in memory)
    checkpoints = ModelFiles(featurestore.open(url, options), "ens")
    assert checkpoints.load_torch("checkpoints", "ensemble.pt") is None
    assert checkpoints.load_torch("checkpoints", "member-00.pt") is not None
    first = score(url, "ens", client=dask_client, storage_options=options, progress=False)
    assert first.scored == 24 and first.commit == 1
    assert score(url, "ens", client=dask_client, storage_options=options,
                 progress=False).scored == 0

    store = featurestore.open(url, options)
    tiles = store.tiles()
    with torch.inference_mode():  # the plain forward pass, not scoring's batched one
        expected = torch.sigmoid(ModelFiles(store, "ens").load_model().eval()(
            torch.from_numpy(tiles.values.astype(np.float32))[:, None])).numpy()
    stored = tile_scores(store, "ens").set_index(["catalog", "track_id", "offset"]).loc[
        list(zip(tiles["catalog"].values, tiles["track_id"].values, tiles["offset"].values))]
    np.testing.assert_allclose(stored[trained.classes].to_numpy(), expected, atol=1e-5)
    best = best_tracks(store, "ens", trained.classes[:2], top=3)
    assert len(best) == 3 and best["film"].notna().all()
    ev = evaluate(store, "ens")
    assert abs(ev.track["lrap"] - trained.metrics["track_lrap"]) < 1e-5
    path = write_report(ev, f"{score_table(store, 'ens').url}/evaluation/test", options)
    assert path.startswith("s3://") and fs.exists(path)
    assert fs.exists(path.replace("report.md", "cooccurrence.png"))
