"""Disk and bucket errors while writing: permission denied at the lock, at a commit, in a
worker's tile write and at a scoring commit; a bucket that does not exist. Each gives a clear
error (exit 5, naming the cause and the path) and leaves what was committed before as it was.

Root writes through any file mode, so under root the command runs with the capabilities that
bypass file modes dropped from its bounding set (``setpriv``); the store really is refused.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pandas as pd
import pytest

import featurestore
from scoring import score
from scoring.score_tables import KEY, score_table, scores
from tests.helpers import (cli, copy_demo_library, run_cli, small_library, track_tiles,
                           write_audio)
from training import TrainConfig, train

if os.geteuid() == 0 and not shutil.which("setpriv"):
    pytest.skip("running as root without setpriv: file modes cannot refuse a write",
                allow_module_level=True)


def unprivileged(args: list[str]) -> list[str]:
    """The command, run so that file modes apply to it even under root."""
    if os.geteuid() != 0:
        return args
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *args]


def read_only(*paths: str) -> None:
    for path in paths:
        os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def writable(root: str) -> None:
    for d, dirs, files in os.walk(root):
        for name in [*dirs, *files, ""]:
            p = os.path.join(d, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)


def committed(table_dir: str) -> dict[str, bytes]:
    """The bytes of a score table's committed files (the rest is staged work, adoptable)."""
    out = {}
    for name in ("rankings.parquet", "version.json"):
        with open(os.path.join(table_dir, name), "rb") as f:
            out[name] = f.read()
    return out


@pytest.fixture
def built(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=4)
    store = str(tmp_path / "store")
    assert featurestore.build(lib, store, client=dask_client, progress=False).exit_code == 0
    write_audio(tmp_path / "lib" / "audio" / "s001.wav", 12.0, seed=99)  # changed: to rebuild
    return lib, store


def _fset_dir(store: str) -> str:
    return featurestore.open(store).feature_set().url


@pytest.mark.parametrize("where", ["lock", "commit", "tiles"])
def test_permission_denied_during_a_build(built, dask_client, capsys, where):
    lib, store = built
    fset = _fset_dir(store)
    denied = {"lock": [os.path.join(store, "locks")],
              "commit": [os.path.join(fset, "manifest", "log"), os.path.join(fset, "manifest")],
              "tiles": [os.path.join(fset, "tiles.zarr", "mfcc", "c"),
                        os.path.join(fset, "tiles.zarr", "mfcc")]}[where]
    tracks, tiles = featurestore.open(store).tracks(), track_tiles(store)
    if where == "tiles":
        # room for the rebuild's region made beforehand: the driver then grows nothing, and
        # the first write refused is a worker's write of a tile chunk
        arrays = featurestore.open(store).feature_set().arrays(read_only=False)
        arrays.ensure_capacity(2 * arrays.capacity + 1)
        denied = denied[:1]
    read_only(*denied)
    try:
        res = subprocess.run(unprivileged(cli("build", lib, "--store", store, "--workers", "1",
                                              "--no-progress")),
                             capture_output=True, text=True, timeout=300)
    finally:
        writable(store)
    assert res.returncode == 5, res.stdout + res.stderr
    assert f"error: store '{store}' cannot be used: permission denied" in res.stderr
    assert any(d + os.sep in res.stderr for d in denied)  # the path refused
    assert "What previous runs committed is intact" in res.stderr
    pd.testing.assert_frame_equal(featurestore.open(store).tracks(), tracks)
    after = track_tiles(store)
    assert after.keys() == tiles.keys()
    assert all((after[k] == tiles[k]).all() for k in tiles)

    # Permissions back: the same command completes the run (in this process, on the session's
    # cluster; the refused run above is the console script).
    res = run_cli(capsys, "build", lib, "--store", store, "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 0 and "1 extracted" in res.stdout, res.stdout + res.stderr


def test_permission_denied_at_a_scoring_commit_keeps_the_rankings(tmp_path, dask_client,
                                                                  demo_library, capsys):
    catalog = copy_demo_library(demo_library, tmp_path / "lib", n_tracks=24)
    store = str(tmp_path / "store")
    featurestore.build(catalog, store, name="demo", client=dask_client, progress=False)
    train(store, "ens", TrainConfig(arch="ensemble", epochs=1, min_tracks=4, test_size=0.25),
          progress=False)
    score(store, "ens", client=dask_client, progress=False)
    featurestore.build(catalog, store, name="more", client=dask_client, progress=False)
    table = score_table(featurestore.open(store), "ens")
    before = committed(table.dir)
    # The version folder refuses new files (the commit's); its staging folders (rankings and
    # embeddings) take the batches.
    for staging in ("staged", "staged-embeddings"):
        os.makedirs(os.path.join(table.dir, staging))
    read_only(table.dir)
    try:
        res = subprocess.run(unprivileged(cli("score", "--store", store, "--model", "ens",
                                              "--workers", "1", "--no-progress")),
                             capture_output=True, text=True, timeout=300)
    finally:
        writable(store)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "permission denied" in res.stderr and table.dir in res.stderr
    assert committed(table.dir) == before
    res = run_cli(capsys, "score", "--store", store, "--model", "ens", "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    # the refused run's batches: the new catalog's 24 tracks, not scored again
    assert "0 tracks scored" in res.stdout, res.stdout
    assert "24 adopted from an interrupted run" in res.stdout, res.stdout
    frame = scores(featurestore.open(store), "ens")
    assert frame.groupby(KEY).ngroups == 48
    assert table.staged_files() == []


def test_missing_bucket_is_named_and_nothing_is_created(s3_endpoint, tmp_path):
    endpoint, options = s3_endpoint
    lib = small_library(tmp_path / "lib", n=2)
    res = subprocess.run(cli("build", lib, "--store", "s3://no-such-bucket/lib", "--workers",
                             "1", "--no-progress",
                             "--storage-option", f"client_kwargs.endpoint_url={endpoint}",
                             "--storage-option", "key=test", "--storage-option", "secret=test"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 5, res.stdout + res.stderr
    assert "store 's3://no-such-bucket/lib' cannot be used" in res.stderr
    assert "bucket does not exist" in res.stderr
    import s3fs
    assert "no-such-bucket" not in s3fs.S3FileSystem(**options).ls("")


def test_a_store_path_that_is_not_a_store_folder_is_refused_untouched(tmp_path, capsys):
    # "" would be the working directory; a file, or a folder of other files (the audio's,
    # say), would become a store's root
    lib = small_library(tmp_path / "lib", n=1, seconds=12.0)
    (tmp_path / "afile").write_text("mine")
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "cue.wav").write_text("not a store")
    for store, code, words in (("", 2, "the store's path or URL is empty"),
                               (str(tmp_path / "afile"), 5, "is a file, not a feature store"),
                               (str(tmp_path / "audio"), 5, "holds other files and is not a "
                                                            "feature store")):
        res = run_cli(capsys, "build", lib, "--store", store, "--workers", "1")
        assert (res.returncode, words in res.stderr) == (code, True), res.stderr
    assert (tmp_path / "afile").read_text() == "mine"
    assert os.listdir(tmp_path / "audio") == ["cue.wav"]
    assert not os.path.exists(os.path.join(os.getcwd(), "featurestore.json"))
    (tmp_path / "empty").mkdir()  # an empty folder is a new store's
    assert run_cli(capsys, "build", lib, "--store", str(tmp_path / "empty"), "--workers",
                   "1").returncode == 0
