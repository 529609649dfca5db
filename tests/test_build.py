"""The Dask build on a real LocalCluster: incremental, rebuilds, removals, statistics, locks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

import dask
import numpy as np
import pandas as pd
import pytest
from distributed import WorkerPlugin, default_client

import featurestore
from catalogs.reader import CatalogError
from catalogs.writer import write_catalog
from featurestore import layout
from featurestore.errors import StoreBusyError, StoreError
from featurestore.expressions import QueryError
from featurestore.build_tasks import TrackTask
from featurestore.lock import WriterLock
from featurestore.planning import make_batches
from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.store import Store
from tests.helpers import cli, run_cli, small_library, track_tiles, write_audio


def _log_files(store_url: str) -> list[str]:
    fset = featurestore.open(store_url).feature_set()
    log_dir = os.path.join(fset.url, "manifest", "log")
    return sorted(os.listdir(log_dir)) if os.path.exists(log_dir) else []


def test_build_then_noop_then_changed_file(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=5, seconds=20.0)
    url = str(tmp_path / "store")
    first = featurestore.build(lib, url, client=dask_client, progress=False)
    assert first.exit_code == 0 and first.built == 5 and first.failures == []
    tracks = featurestore.open(url).tracks()
    assert list(tracks["status"]) == ["ok"] * 5
    assert list(tracks["n_tiles"]) == [2] * 5  # 20 s = 2 tiles of 9.29 s
    assert tracks.loc[0, "genres"].tolist() == ["Drama", "Romance"]
    tiles_before = track_tiles(url)
    snapshot = os.path.join(featurestore.open(url).feature_set().url, "manifest",
                            "snapshot.parquet")
    mtime = os.path.getmtime(snapshot)

    again = featurestore.build(lib, url, client=dask_client, progress=False)
    assert (again.built, again.unchanged, again.commits) == (0, 5, 0)
    assert "nothing to do" in again.summary()
    assert os.path.getmtime(snapshot) == mtime

    # Touch without change: hashed, not decoded, tiles kept.
    path = os.path.join(tmp_path, "lib", "audio", "s001.wav")
    os.utime(path, (time.time() + 5, time.time() + 5))
    touched = featurestore.build(lib, url, client=dask_client, progress=False)
    assert (touched.built, touched.failed, touched.refreshed, touched.unchanged) == (0, 0, 1, 4)
    # A changed file is rebuilt; its old tiles stop being served.
    write_audio(path, 30.0, seed=99)
    changed = featurestore.build(lib, url, client=dask_client, progress=False)
    assert changed.built == 1 and changed.unchanged == 4
    after = track_tiles(url)
    assert after[("catalog", "s001")].shape == (3, 40, 100)
    assert not np.allclose(after[("catalog", "s001")][:2], tiles_before[("catalog", "s001")])
    for key in tiles_before:
        if key[1] != "s001":
            np.testing.assert_array_equal(after[key], tiles_before[key])
    assert featurestore.open(url).tiles().sizes["tile"] == 11

    # The catalog exported again under a dated name: a new catalog, which would store every
    # file a second time. The build says so, and names the option that updates the old one.
    dated = str(tmp_path / "lib" / "catalog-2026-11-28.csv")
    shutil.copy(lib, dated)
    said: list[str] = []
    same = featurestore.build(dated, url, name="catalog", client=dask_client, progress=False,
                              log=said.append)
    assert (same.built, same.unchanged, said) == (0, 5, [])
    report = featurestore.build(dated, url, client=dask_client, progress=False, log=said.append)
    assert report.built == 5
    assert [m for m in said if m.startswith("warning")] == [
        "warning: catalog 'catalog-2026-11-28' is new to this store, and 5 of its 5 files are "
        "built already as catalog 'catalog'; they are stored again under "
        "'catalog-2026-11-28'. A renamed catalog file? Build it with --catalog catalog "
        "(name='catalog') to update that catalog instead."]


def test_statistics_follow_live_tiles_exactly(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=4, seconds=20.0)
    url = str(tmp_path / "store")
    featurestore.build(lib, url, client=dask_client, progress=False)
    write_audio(tmp_path / "lib" / "audio" / "s002.wav", 40.0, seed=42)  # changed
    rows = [r for r in _catalog_rows(lib) if r["track_id"] != "s003"]   # s003 removed
    write_catalog(lib, rows)
    report = featurestore.build(lib, url, client=dask_client, progress=False)
    assert report.removed == 1 and report.built == 1
    store = featurestore.open(url)
    live = store.tiles().values.astype(np.float64)
    mean, std, count = store.feature_set().statistics()
    assert count == len(live) == 2 + 2 + 4
    np.testing.assert_allclose(mean, live.mean(axis=0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(std, live.std(axis=0), rtol=1e-4, atol=1e-3)
    everything = store.tracks(include_removed=True)
    assert everything.set_index("track_id").loc["s003", "status"] == "removed"
    assert "s003" not in set(store.tracks()["track_id"])
    # a status filter naming removed asks for them: `tracks --status removed`
    assert list(store.tracks(status="removed")["track_id"]) == ["s003"]
    assert set(store.tracks(status=["removed", "ok"])["track_id"]) == set(
        everything["track_id"])


def _catalog_rows(path: str) -> list[dict]:
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def test_catalogs_the_store_cannot_hold_are_refused_before_anything_is_written(tmp_path,
                                                                             dask_client):
    """A column named as a store's own (a query could not join it), and a catalog none of
    whose built files can be found (an audio folder not mounted), change nothing."""
    lib = small_library(tmp_path / "lib", n=3, seconds=12.0)
    frame = pd.read_csv(lib)
    frame.assign(status="licensed").to_csv(tmp_path / "status.csv", index=False)
    store = str(tmp_path / "store")
    with pytest.raises(CatalogError, match="column 'status'.*gives every track a column"):
        featurestore.build(str(tmp_path / "status.csv"), store, client=dask_client,
                           progress=False)
    assert not os.path.exists(store)

    featurestore.build(lib, store, client=dask_client, progress=False)
    before = featurestore.open(store).tracks()
    os.rename(tmp_path / "lib" / "audio", tmp_path / "lib" / "unmounted")
    with pytest.raises(CatalogError, match="none of the 3 files built before can be found"):
        featurestore.build(lib, store, client=dask_client, progress=False)
    pd.testing.assert_frame_equal(featurestore.open(store).tracks(), before)
    # one file gone is that track's failure, as ever
    os.rename(tmp_path / "lib" / "unmounted", tmp_path / "lib" / "audio")
    os.remove(tmp_path / "lib" / "audio" / "s001.wav")
    report = featurestore.build(lib, store, client=dask_client, progress=False)
    assert [f[:2] for f in report.failures] == [("s001", "missing")]
    assert featurestore.open(store).tiles().sizes["tile"] == 2  # one tile a track
    # still missing on the next run: looked for, not up to date, and the summary says so
    again = featurestore.build(lib, store, client=dask_client, progress=False)
    assert [f[:2] for f in again.failures] == [("s001", "missing")] and again.built == 0
    assert ("nothing to do: every track's tiles are up to date but for the failed tracks "
            "below\n  1 track has no tiles") in again.summary()


def test_two_catalogs_do_not_touch_each_other(tmp_path, dask_client):
    a = small_library(tmp_path / "a", n=3, seconds=12.0, name="alpha.csv")
    b = small_library(tmp_path / "b", n=2, seconds=12.0, start_seed=50, name="beta.csv")
    url = str(tmp_path / "store")
    featurestore.build(a, url, client=dask_client, progress=False)
    featurestore.build(b, url, client=dask_client, progress=False)
    before = track_tiles(url, "alpha")
    # beta shrinks, same track ids as alpha's, and gains a column alpha has not
    write_catalog(b, [{**row, "mood": "tense"} for row in _catalog_rows(b)[:1]])
    featurestore.build(b, url, client=dask_client, progress=False)
    store = featurestore.open(url)
    assert store.catalog_names() == ["alpha", "beta"]
    tracks = store.tracks()
    assert len(tracks[tracks["catalog"] == "alpha"]) == 3
    assert list(tracks[tracks["catalog"] == "beta"]["track_id"]) == ["s000"]
    assert store.tracks(catalog="beta", columns=["mood"])["mood"].tolist() == ["tense"]
    with pytest.raises(QueryError, match="catalog 'alpha' has no column.s. 'mood'; catalog.s. "
                                         "'beta' have them: choose one"):
        store.tracks(columns=["mood"])
    after = track_tiles(url, "alpha")
    assert before.keys() == after.keys()
    for key in before:
        np.testing.assert_array_equal(before[key], after[key])


class RecordTaskProcesses(WorkerPlugin):
    """Leaves a file named by the worker's process id in ``directory`` for each extraction
    task it finishes."""

    def __init__(self, directory: str):
        self.directory = directory

    def transition(self, key, start, finish, **kwargs):
        if start == "executing" and finish == "memory" and str(key).startswith("extract-"):
            with open(os.path.join(self.directory, str(os.getpid())), "a") as f:
                f.write(f"{key}\n")


def test_local_cluster_of_two_processes_from_build(tmp_path):
    """No client given: build starts its own LocalCluster of 2 worker processes, and both
    extract tracks."""
    lib = small_library(tmp_path / "lib", n=4, seconds=12.0)
    ran = tmp_path / "ran"
    ran.mkdir()

    def log(message: str) -> None:  # build logs once its cluster is up, before any task
        default_client().register_plugin(RecordTaskProcesses(str(ran)), name="record")

    # A batch per track (WAV sizes are read as 44.1 kHz stereo: a 12 s mono track as 3 s).
    report = featurestore.build(lib, str(tmp_path / "store"), n_workers=2, progress=False,
                                batch_seconds=1.0, log=log)
    assert report.built == 4 and report.exit_code == 0
    assert report.commits >= 1
    pids = {int(name) for name in os.listdir(ran)}
    assert len(pids) == 2 and os.getpid() not in pids, pids


def test_memory_store_builds_on_threads(tmp_path):
    lib = small_library(tmp_path / "lib", n=2, seconds=12.0)
    report = featurestore.build(lib, "memory://fs-test/store", n_workers=1, progress=False)
    assert report.built == 2
    tracks = featurestore.open("memory://fs-test/store").tracks()
    assert list(tracks["status"]) == ["ok", "ok"]
    # memory:// lives in this process: compute here, not on a session's cluster
    store = featurestore.open("memory://fs-test/store")
    tiles = store.tiles().compute(scheduler="threads").values
    mean, _, count = store.feature_set().statistics()
    assert tiles.shape == (2, 40, 100) and count == 2
    np.testing.assert_allclose(tiles.mean(axis=0), mean, rtol=1e-5, atol=1e-4)
    with pytest.raises(StoreError, match="memory:// store lives in this process"):
        featurestore.build(lib, "memory://fs-test/store2", scheduler="tcp://127.0.0.1:1",
                           progress=False)
    with dask.config.set({"scheduler-address": "tcp://127.0.0.1:1"}), pytest.raises(
            StoreError, match="memory:// store lives in this process"):  # as from the env
        featurestore.build(lib, "memory://fs-test/store2", progress=False)


def test_a_script_without_a_main_guard_is_told_to_add_one(tmp_path):
    # A LocalCluster spawns its workers, and each runs the script again: unguarded, each would
    # start the same build. A script with no guard is refused before anything is written; one
    # that only seems guarded (the word in a comment) is refused by the workers as they start.
    lib = small_library(tmp_path / "lib", n=1, seconds=12.0)
    call = f"featurestore.build({str(lib)!r}, {{url!r}}, n_workers=1, progress=False)\n"
    for name, head in (("rebuild.py", ""), ("seems_guarded.py", "# no __main__ guard here\n")):
        url = str(tmp_path / name.replace(".py", ""))
        script = tmp_path / name
        script.write_text(head + "import featurestore\n" + call.format(url=url))
        res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path)
        assert res.returncode == 1
        if not head:
            assert res.stderr.splitlines()[-1] == (
                f"RuntimeError: featurestore.build starts a LocalCluster, whose worker processes "
                f"each run {script} again as they start, and it has no `if __name__ == "
                f"\"__main__\":` guard: put the call under one")
            assert not os.path.exists(url)
        else:
            assert ("featurestore.build was called while a Dask worker process was starting"
                    in res.stderr)
            assert not os.path.exists(layout.writer_lock(url))  # let go: the next run starts


def test_cluster_options_that_conflict_or_point_nowhere_are_refused_before_the_store(tmp_path):
    lib = small_library(tmp_path / "lib", n=1, seconds=12.0)
    url = str(tmp_path / "store")
    missing = str(tmp_path / "scheduler.json")
    for options, words in (
            (dict(scheduler="tcp://127.0.0.1:1", n_workers=2),
             r"n_workers \(--workers\) sizes the LocalCluster a run starts; the cluster of "
             r"scheduler \(--scheduler\) has its own"),
            (dict(scheduler="tcp://127.0.0.1:1", scheduler_file=missing),
             r"give one of scheduler \(--scheduler\) and scheduler_file \(--scheduler-file\), "
             "not both"),
            # Dask's client would wait for the file forever; a run waits as long as Dask waits
            # to connect
            (dict(scheduler_file=missing), f"--scheduler-file {missing}: no such file "
                                           r"\(waited 1 s")):
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), pytest.raises(
                ValueError, match=words):
            featurestore.build(lib, url, progress=False, **options)
        assert not os.path.exists(url)
    with dask.config.set({"scheduler-address": "tcp://127.0.0.1:1"}), pytest.raises(
            ValueError, match="the cluster of DASK_SCHEDULER_ADDRESS has its own workers"):
        featurestore.build(lib, url, progress=False, n_workers=2)
    assert not os.path.exists(url)


def test_a_store_of_feature_sets_none_the_default_says_which_it_counts(tmp_path, dask_client,
                                                                       capsys):
    lib = small_library(tmp_path / "lib", n=2, seconds=6.0)
    url = str(tmp_path / "store")
    short, mel = FeatureSpec(hop_length=1024, tile_frames=50, tile_hop=50), FeatureSpec(
        kind="logmel")
    for spec in (short, mel):  # the log-mel set built last
        featurestore.build(lib, url, client=dask_client, progress=False, spec=spec)
    res = run_cli(capsys, "info", "--store", url)
    assert res.returncode == 0 and "2 tracks" in res.stdout
    assert f"track statuses of feature set {mel.hash}; --feature-set for another" in res.stdout
    res = run_cli(capsys, "info", "--store", url, "--feature-set", short.hash, "--format", "json")
    assert json.loads(res.stdout)["statuses_of"] == short.hash
    # a choice left open, or a name the store lacks, is the request's error (2), not the store's
    res = run_cli(capsys, "tracks", "--store", url)
    assert res.returncode == 2 and "name one (--feature-set, or feature_set=" in res.stderr
    assert run_cli(capsys, "tracks", "--store", url, "--feature-set", "logmel").returncode == 0
    res = run_cli(capsys, "tracks", "--store", url, "--feature-set", "mfcc", "--catalog", "nope")
    assert res.returncode == 2 and "has no catalog 'nope'" in res.stderr


def test_specs_never_mix_and_chunks_are_task_owned(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=3, seconds=20.0)
    url = str(tmp_path / "store")
    featurestore.build(lib, url, client=dask_client, progress=False,
                       encoding=TileEncoding(chunk_tiles=4), batch_seconds=1.0)
    other = FeatureSpec(hop_length=1024, tile_frames=50, tile_hop=50)
    featurestore.build(lib, url, client=dask_client, progress=False, spec=other)
    said = []  # another encoding for an existing set: kept as made, and said so
    featurestore.build(lib, url, client=dask_client, progress=False, log=said.append,
                       encoding=TileEncoding(chunk_tiles=8))
    assert (f"note: feature set {FeatureSpec().hash} keeps the encoding it was made with (4 "
            "tiles a chunk, zstd level 3, shuffle); an encoding applies to a new feature set"
            in said)
    store = featurestore.open(url)
    assert store.feature_set().encoding.chunk_tiles == 4
    assert set(store.feature_set_hashes()) == {FeatureSpec().hash, other.hash}
    assert store.tiles(feature_set=other).shape[1:] == (40, 50)
    assert store.tiles(feature_set=FeatureSpec()).shape[1:] == (40, 100)
    # A frame's tile_start is the feature set it was joined with: given to the other set (or
    # from an earlier build), its tiles are looked up again, not read from those slots.
    frame = store.tracks(feature_set=FeatureSpec()).iloc[::-1]
    everything = store.tiles(feature_set=other)
    np.testing.assert_array_equal(
        store.tiles(frame, feature_set=other).values,
        np.concatenate([everything.values[everything["track_id"].values == t]
                        for t in frame["track_id"]]))
    stale = frame.assign(tile_start=frame["tile_start"] + 1)
    np.testing.assert_array_equal(store.tiles(stale).values, store.tiles(frame).values)
    with pytest.raises(QueryError, match="no track_id column"):
        store.tiles(frame[["catalog"]])
    assert store.feature_set().hash == FeatureSpec().hash  # the default spec's, of several
    state = store.feature_set(FeatureSpec()).state().frame
    # Each batch (one track here) starts on its own chunk of 4 tiles.
    assert sorted(state["tile_start"] % 4) == [0, 0, 0]


def test_batches_run_the_longest_tracks_first():
    # A 60-minute suite last in a catalog of 1-minute cues: run last, it kept one worker busy
    # alone for half the build.
    ids = [f"cue{i}" for i in range(40)] + ["suite"]
    seconds = {**{t: 60.0 for t in ids}, "suite": 3600.0}
    tasks = [TrackTask(t, f"/lib/{t}.mp3") for t in ids]
    batches = make_batches(tasks, seconds, n_workers=2, chunk_seconds=256 * 9.29)
    order = [t.track_id for batch in batches for t in batch]
    assert order == ["suite"] + ids[:-1]  # each once; catalog order among equal lengths
    assert batches[0] == [tasks[-1]]
    # Batches shrink towards the end, down to one track, so that workers finish together.
    audio = [sum(seconds[t.track_id] for t in batch) for batch in batches]
    assert audio[1:] == sorted(audio[1:], reverse=True) and len(batches[-1]) == 1


def test_second_writer_refused_and_stale_lock_taken_over(tmp_path, dask_client):
    lib = small_library(tmp_path / "lib", n=1, seconds=12.0)
    url = str(tmp_path / "store")
    featurestore.build(lib, url, client=dask_client, progress=False)
    store = Store(url)
    with WriterLock(store.fs, layout.writer_lock(store.root), purpose="build"):
        with pytest.raises(StoreBusyError, match="being written by another build"):
            featurestore.build(lib, url, client=dask_client, progress=False)
    # A lock left by a dead process (SIGKILLed build) does not block the next build.
    with open(layout.writer_lock(store.root), "w") as f:
        json.dump({"token": "x", "host": os.uname().nodename, "pid": 2 ** 22 + 7,
                   "purpose": "build", "heartbeat": time.time()}, f)
    assert featurestore.build(lib, url, client=dask_client, progress=False).exit_code == 0
    assert not os.path.exists(layout.writer_lock(store.root))


def test_two_builds_started_at_once(tmp_path, dask_client):
    """Two `featurestore build` processes on one new store at the same moment: one builds, the
    other refuses with exit 5 naming the holder (or, if it came late, finds nothing to do);
    the store equals one build's, each track once."""
    lib = small_library(tmp_path / "lib", n=16, seconds=20.0)
    reference = str(tmp_path / "reference")
    featurestore.build(lib, reference, client=dask_client, progress=False)
    store = str(tmp_path / "store")
    procs = [subprocess.Popen(cli("build", lib, "--store", store, "--workers", "1",
                                  "--no-progress"), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes in ([0, 0], [0, 5]), results
    for code, out, err in results:
        if code == 5:
            assert "being written by another build" in err
        elif "16 extracted" not in out:
            assert "0 extracted" in out and "16 skipped" in out
    # exactly one of them extracted, and every track's row comes from that one run
    assert sum("16 extracted" in out for _, out, _ in results) == 1, results
    fset = featurestore.open(store).feature_set()
    assert fset.state().frame["run_id"].nunique() == 1
    tracks = featurestore.open(store).tracks()
    assert len(tracks) == 16 and (tracks["status"] == "ok").all()
    expected, got = track_tiles(reference), track_tiles(store)
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])


def test_feature_set_creation_killed_midway_is_redone(tmp_path, dask_client):
    """A build killed while creating the feature set's arrays (found by the lock-point kill):
    the next build recreates them instead of failing on the half-made group."""
    import zarr

    from featurestore.tile_arrays import zarr_store
    lib = small_library(tmp_path / "lib", n=2)
    url = str(tmp_path / "store")
    Store(url).initialize()
    group = zarr.open_group(zarr_store(layout.tiles_group(url, FeatureSpec().hash), None),
                            mode="a", zarr_format=3)
    group.create_array("coefficient", data=np.arange(3, dtype=np.int32))
    assert featurestore.build(lib, url, client=dask_client, progress=False).exit_code == 0
    assert featurestore.open(url).tiles().shape == (2, 40, 100)


def test_store_of_another_layout_is_refused(tmp_path):
    url = tmp_path / "store"
    url.mkdir()
    (url / "featurestore.json").write_text(json.dumps({"format": "featurestore",
                                                       "layout_version": 99}))
    with pytest.raises(StoreError, match="layout version 99"):
        featurestore.open(str(url))
    with pytest.raises(StoreError, match="not a feature store"):
        featurestore.open(str(tmp_path))


@pytest.mark.parametrize("change", ["other spec", "unknown field", "older algorithm"])
def test_feature_set_of_another_spec_or_version_is_reported_not_misread(tmp_path, change,
                                                                       dask_client):
    """spec.json that does not describe the folder's tiles (edited, from another version's
    fields or hash): reads and builds refuse with exit 5 naming the file; nothing changes."""
    lib = small_library(tmp_path / "lib", n=2)
    url = str(tmp_path / "store")
    featurestore.build(lib, url, client=dask_client, progress=False)
    path = layout.spec_file(url, FeatureSpec().hash)
    data = json.load(open(path))
    if change == "other spec":
        data["spec"]["n_mfcc"] = 20
    elif change == "unknown field":
        data["spec"]["window"] = "blackman"
    else:  # tiles of an older algorithm sit in a folder named by their own hash
        old = os.path.join(os.path.dirname(os.path.dirname(path)), "0123456789abcdef")
        os.rename(os.path.dirname(path), old)
        path = os.path.join(old, "spec.json")
    with open(path, "w") as f:
        json.dump(data, f)
    before = {os.path.join(d, n): os.path.getmtime(os.path.join(d, n))
              for d, _, files in os.walk(url) for n in files}
    with pytest.raises(StoreError, match="written by a different"):
        featurestore.open(url).tracks()
    res = subprocess.run(cli("tracks", "--store", url), capture_output=True, text=True)
    assert res.returncode == 5 and path in res.stderr, res.stderr
    if change != "older algorithm":
        res = subprocess.run(cli("build", lib, "--store", url, "--workers", "1",
                                 "--no-progress"), capture_output=True, text=True)
        assert res.returncode == 5 and path in res.stderr, res.stderr
        after = {os.path.join(d, n): os.path.getmtime(os.path.join(d, n))
                 for d, _, files in os.walk(url) for n in files}
        assert after == before
    else:  # a build of today's spec makes its own feature set beside the old one
        assert featurestore.build(lib, url, client=dask_client, progress=False).exit_code == 0
        assert featurestore.open(url).feature_set().hash == FeatureSpec().hash
        res = subprocess.run(cli("info", "--store", url), capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        assert "feature set 0123456789abcdef: not read:" in res.stdout


def _constant_tiles(path, spec, storage_options, known_hash):
    """A stand-in extractor: two tiles of one value per track, the value from its file name."""
    from featurestore.extract import TrackResult

    value = float(os.path.basename(path)[1:4])
    tiles = np.full((2, *spec.tile_shape), value, dtype=np.float32)
    return TrackResult("ok", "", tiles, f"hash-{value}", 20.0, 22050, 1)


def test_extractor_stands_in_on_the_workers(tmp_path, dask_client):
    """The workers run the build's ``extractor`` in place of the study's extraction; its tiles,
    facts and statistics are committed like real ones (the scaling benchmark's simulated work)."""
    catalog = small_library(tmp_path, n=4)
    url = str(tmp_path / "store")
    report = featurestore.build(catalog, url, client=dask_client, progress=False,
                                extractor=_constant_tiles)
    assert report.built == 4 and report.tiles_written == 8 and not report.failures
    tiles = track_tiles(url)
    for (_, track_id), got in tiles.items():
        np.testing.assert_array_equal(got, np.full((2, 40, 100), int(track_id[1:])))
    tracks = featurestore.open(url).tracks()
    assert set(tracks["content_hash"]) == {f"hash-{float(i)}" for i in range(4)}
    mean, _, count = featurestore.open(url).feature_set().statistics()
    assert count == 8 and np.allclose(mean, 1.5)
