"""Faults that really happen to nightly runs: a Dask worker process killed in the middle of a
build and of a scoring run, a scoring driver killed between its two commit writes, and a
build running while a scoring run reads the same store."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from distributed import get_task_stream

import featurestore
from featurestore.cluster import connect
from scoring import embeddings, score
from scoring.score_tables import KEY, score_table, scores, tile_scores
from tests.helpers import assert_same_build, copy_demo_library, small_library, write_audio
from training import TrainConfig, train

MODEL = "ens"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_library, dask_client):
    root = tmp_path_factory.mktemp("faults")
    catalog = copy_demo_library(demo_library, root / "lib", n_tracks=32)
    url = str(root / "store")
    featurestore.build(catalog, url, name="demo", client=dask_client, progress=False,
                       encoding=featurestore.TileEncoding(chunk_tiles=8))
    train(url, MODEL, TrainConfig(arch="ensemble", epochs=1, optimizer="adam",
                                  learning_rate=1e-3, min_tracks=6, test_size=0.25),
          progress=False)
    return {"store": url, "catalog": catalog}


def _rankings(url: str) -> pd.DataFrame:
    frame = scores(featurestore.open(url), MODEL)
    return frame[[*KEY, "label", "score", "rank", "content_hash"]].sort_values(
        [*KEY, "label"]).reset_index(drop=True)


def test_worker_killed_mid_scoring_run_gives_the_undisturbed_result(trained, tmp_path,
                                                                    dask_client):
    reference = str(tmp_path / "reference")
    shutil.copytree(trained["store"], reference)
    score(reference, MODEL, client=dask_client, progress=False)
    url = str(tmp_path / "store")
    shutil.copytree(trained["store"], url)

    with connect(n_workers=2) as client:
        pids = list(client.run(os.getpid).values())
        outcome: dict = {}

        def run():
            try:
                outcome["report"] = score(url, MODEL, client=client, progress=False,
                                          batch_tiles=1)
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        worker = threading.Thread(target=run)
        worker.start()
        staged = os.path.join(url, "scores", MODEL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                f.endswith(".parquet") for _, _, files in os.walk(staged) for f in files):
            time.sleep(0.01)
        committed = [f for _, _, files in os.walk(staged) for f in files
                     if f == "rankings.parquet"]
        batches_done = [f for d, _, files in os.walk(staged) for f in files
                        if os.sep + "staged" + os.sep in d + os.sep and f.endswith(".parquet")]
        midway = worker.is_alive() and not committed
        os.kill(pids[0], signal.SIGKILL)
        worker.join(300)
    assert midway, "the scoring run had committed before the kill"
    # batch_tiles=1: a batch per track, most of them still to do when the worker died
    assert len(batches_done) < 32 // 2, batches_done
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert report.scored == 32 and report.commit == 1
    got, expected = _rankings(url), _rankings(reference)
    pd.testing.assert_frame_equal(got.drop(columns="score"), expected.drop(columns="score"))
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-6)
    tiles = tile_scores(featurestore.open(url), MODEL)
    assert len(tiles) == featurestore.open(url).tracks()["n_tiles"].sum()
    assert not tiles.duplicated([*KEY, "offset"]).any()
    assert score_table(featurestore.open(url), MODEL).staged_files() == []


#: A scoring run whose driver dies (SIGKILL: no cleanup, its lock left behind) the moment it
#: starts writing ``rankings.parquet``, that is after ``embeddings.parquet`` is written.
_DIES_BEFORE_RANKINGS = """
import os, signal, sys
import scoring.score_tables as tables
from scoring import score

write = tables.atomic_write

def write_or_die(fs, path, data):
    if path.endswith("rankings.parquet"):
        os.kill(os.getpid(), signal.SIGKILL)
    write(fs, path, data)

tables.atomic_write = write_or_die
score(sys.argv[1], sys.argv[2], scheduler=sys.argv[3], progress=False)
"""


def _embedded(url: str) -> pd.DataFrame:
    """The served (current) embeddings, one row per track, without the run's lineage."""
    frame = embeddings(featurestore.open(url), MODEL)
    assert not frame.duplicated(KEY).any()
    return frame[[*KEY, "embedding"]].sort_values(KEY).reset_index(drop=True)


def test_run_killed_between_embeddings_and_rankings_commit_is_picked_up(trained, tmp_path,
                                                                         dask_client):
    """The driver dies after writing the new embeddings and before the new rankings, in a run
    that scores a track whose audio changed: the old rankings stay, no embedding of the old
    audio is served, and the next run adopts the dead run's batch and commits both files to
    the result of an undisturbed run."""
    url = str(tmp_path / "store")
    shutil.copytree(trained["store"], url)
    score(url, MODEL, client=dask_client, progress=False)
    work = str(tmp_path / "lib")
    shutil.copytree(os.path.dirname(trained["catalog"]), work)
    catalog = pd.read_csv(trained["catalog"])
    changed = catalog.loc[catalog["path"].str.endswith(".wav"), "track_id"].iloc[0]
    path = catalog.loc[catalog["track_id"] == changed, "path"].iloc[0]
    write_audio(os.path.join(work, path), seconds=15.0, seed=77)
    featurestore.build(os.path.join(work, os.path.basename(trained["catalog"])), url,
                       name="demo", client=dask_client, progress=False)
    reference = str(tmp_path / "reference")
    shutil.copytree(url, reference)
    score(reference, MODEL, client=dask_client, progress=False)
    old_rankings = _rankings(url)
    table = score_table(featurestore.open(url), MODEL)

    res = subprocess.run([sys.executable, "-c", _DIES_BEFORE_RANKINGS, url, MODEL,
                          dask_client.scheduler.address], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stdout + res.stderr
    assert table.seq() == 1 and len(table.staged_files()) == 1
    assert pq.read_schema(table.embeddings_path).metadata[b"featurestore.seq"] == b"2"
    pd.testing.assert_frame_equal(_rankings(url), old_rankings)
    # served: the unchanged tracks' embeddings and the changed track's from its new audio
    # (the reference's), never the one of its old audio
    got, expected = _embedded(url), _embedded(reference)
    pd.testing.assert_frame_equal(got[KEY], expected[KEY])
    np.testing.assert_allclose(np.stack(got["embedding"]), np.stack(expected["embedding"]),
                               atol=1e-5)

    report = score(url, MODEL, client=dask_client, progress=False)
    assert (report.adopted, report.scored, report.commit) == (1, 0, 2)
    assert table.seq() == 2 and table.staged_files() == []
    pd.testing.assert_frame_equal(_rankings(url).drop(columns="score"),
                                  _rankings(reference).drop(columns="score"))
    np.testing.assert_allclose(_rankings(url)["score"], _rankings(reference)["score"],
                               atol=1e-6)
    got = _embedded(url)
    pd.testing.assert_frame_equal(got[KEY], expected[KEY])
    np.testing.assert_allclose(np.stack(got["embedding"]), np.stack(expected["embedding"]),
                               atol=1e-5)
    assert pq.read_schema(table.embeddings_path).metadata[b"featurestore.seq"] == b"2"
    again = score(url, MODEL, client=dask_client, progress=False)
    assert (again.scored, again.commit) == (0, 0)


def test_worker_killed_mid_build_gives_the_undisturbed_tiles(tmp_path, dask_client):
    """One of two worker processes SIGKILLed once the build has committed: Dask reruns its
    tasks elsewhere, and every track's tiles and the statistics equal an undisturbed build's."""
    lib = small_library(tmp_path / "lib", n=40, seconds=20.0)
    reference = str(tmp_path / "reference")
    featurestore.build(lib, reference, client=dask_client, progress=False, batch_seconds=2.0)
    url = str(tmp_path / "store")
    with connect(n_workers=2) as client:
        pids = list(client.run(os.getpid).values())
        outcome: dict = {}

        def run():
            try:
                outcome["report"] = featurestore.build(lib, url, client=client, progress=False,
                                                       batch_seconds=2.0)
            except Exception as exc:  # noqa: BLE001 - reported below
                outcome["error"] = exc

        builder = threading.Thread(target=run)
        builder.start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any(
                "log" in root and files for root, _, files in os.walk(url)):
            time.sleep(0.01)
        midway = builder.is_alive()
        os.kill(pids[0], signal.SIGKILL)
        builder.join(300)
        assert midway, "the build ended before the kill"
        assert "error" not in outcome, outcome.get("error")
        client.wait_for_workers(2, timeout=60)  # the nanny restarted it
    report = outcome["report"]
    assert report.built == 40 and report.exit_code == 0
    assert_same_build(url, reference, 40, n_tiles=80)


def test_build_and_scoring_run_together(trained, tmp_path, dask_client):
    """A build adding a catalog while a scoring run works: both finish; the scores are whole
    and the next scoring run picks up exactly the tracks the build added."""
    url = str(tmp_path / "store")
    shutil.copytree(trained["store"], url)
    featurestore.build(trained["catalog"], url, name="more", client=dask_client,
                       progress=False)
    results: dict = {}

    def run_score():
        results["score"] = score(url, MODEL, client=dask_client, progress=False,
                                 batch_tiles=2)

    with get_task_stream(dask_client) as stream:
        scoring = threading.Thread(target=run_score)
        scoring.start()
        build = featurestore.build(trained["catalog"], url, name="third", client=dask_client,
                                   progress=False)
        scoring.join(300)
    assert build.built == 32 and 64 <= results["score"].scored <= 96
    # the cluster ran scoring tasks and extractions at the same time
    spans = {kind: [(t["startstops"][0]["start"], t["startstops"][-1]["stop"])
                    for t in stream.data if t["key"].startswith(kind)]
             for kind in ("score-", "extract-")}
    assert any(a < d and c < b for a, b in spans["score-"] for c, d in spans["extract-"])
    after = score(url, MODEL, client=dask_client, progress=False)
    assert results["score"].scored + after.scored == 96
    frame = scores(featurestore.open(url), MODEL)
    counts = frame.groupby(KEY)["rank"].agg(["count", "max"])
    assert len(counts) == 96 and (counts["count"] == counts["max"]).all()
    assert set(frame["catalog"]) == {"demo", "more", "third"}
