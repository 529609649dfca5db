"""Builds on a scheduler and workers started as separate processes, and builds killed midway."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest

import featurestore
from featurestore.errors import StoreError
from tests.helpers import (assert_same_build, cli, run_cli, small_library, track_tiles,
                           wait_for)


@pytest.fixture
def scheduler_and_workers(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes, as a user starts them."""
    sched_file = str(tmp_path / "scheduler.json")
    # the `dask` command of this interpreter's environment, else the one on PATH (a venv
    # with system site packages has it beside the base interpreter)
    beside = os.path.join(os.path.dirname(sys.executable), "dask")
    dask_cli = beside if os.path.exists(beside) else shutil.which("dask")
    # That environment may install another checkout of featurestore: its workers must run the
    # tasks of this one, as a cluster's workers run the driver's version.
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", ":0", "--scheduler-file", sched_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
    try:
        wait_for(lambda: os.path.exists(sched_file) and os.path.getsize(sched_file) > 0, 60,
                  "scheduler file")
        for _ in range(2):
            procs.append(subprocess.Popen(
                [dask_cli, "worker", "--scheduler-file", sched_file, "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        from distributed import Client
        with Client(scheduler_file=sched_file, timeout=30) as client:
            client.wait_for_workers(2, timeout=60)
        with open(sched_file) as f:
            address = json.load(f)["address"]
        yield address, sched_file
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_cli_build_on_scheduler_with_two_worker_processes(tmp_path, scheduler_and_workers):
    address, sched_file = scheduler_and_workers
    from distributed import Client
    with Client(address) as client:
        # the build names the cluster it runs on by its dashboard; a LocalCluster started
        # in place of the given scheduler would have a dashboard of its own
        on_it = f"dask dashboard: {client.dashboard_link}\n"
        pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2
    lib = small_library(tmp_path / "lib", n=6, seconds=12.0)
    store = str(tmp_path / "store")
    res = subprocess.run(cli("build", lib, "--store", store, "--scheduler", address,
                             "--batch-seconds", "5", "--no-progress"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "6 extracted" in res.stdout and on_it in res.stderr, res.stderr
    # The same through DASK_SCHEDULER_ADDRESS and through a scheduler file (each run has work,
    # as a build with nothing to do connects to no cluster).
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
    for how, extra in (({"env": env}, []), ({}, ["--scheduler-file", sched_file])):
        res = subprocess.run(cli("build", lib, "--store", store, "--rebuild", "--no-progress",
                                 *extra), capture_output=True, text=True, timeout=300, **how)
        assert res.returncode == 0 and "6 extracted" in res.stdout, res.stderr
        assert on_it in res.stderr, res.stderr
    assert list(featurestore.open(store).tracks()["status"]) == ["ok"] * 6


@pytest.fixture(scope="module")
def reference_build(tmp_path_factory, dask_client):
    """A 40-track library and its undisturbed build."""
    root = tmp_path_factory.mktemp("killed")
    lib = small_library(root / "lib", n=40, seconds=20.0)
    reference = str(root / "reference")
    featurestore.build(lib, reference, client=dask_client, progress=False, batch_seconds=1.0)
    return lib, reference


def _committed_ok(store: str) -> int:
    """Tracks a reader sees as built, after checking each reads whole; -1 before the store
    exists."""
    try:
        tracks = featurestore.open(store).tracks()
    except StoreError as exc:
        if "is not a feature store" not in str(exc):
            raise
        return -1  # not created yet: the build has not started
    if not len(tracks):
        return 0
    assert set(tracks["status"]) <= {"ok", "pending"}
    tiles = track_tiles(store)
    assert all(t.shape == (2, 40, 100) for t in tiles.values())
    return len(tiles)


def _commits(store: str) -> int:
    logs = [os.path.join(root, "manifest", "log") for root in
            glob.glob(os.path.join(store, "features", "*"))]
    return sum(len(os.listdir(d)) for d in logs if os.path.isdir(d))


@pytest.mark.parametrize("point", ["lock", "first_commit", "second_commit"])
def test_killed_build_resumes_to_identical_tiles(reference_build, tmp_path, dask_client, capsys,
                                                point):
    """SIGKILL the whole build (driver and its LocalCluster) as soon as it holds the lock,
    after its first commit, or after its second. A reader polling throughout sees only whole
    tracks, never fewer than before; a rerun builds exactly the rest and equals an undisturbed
    build."""
    lib, reference = reference_build
    store = str(tmp_path / "store")
    lock = os.path.join(store, "locks", "writer.json")
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def read():
        while not stop.is_set():
            try:
                seen.append(_committed_ok(store))
            except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
                errors.append(repr(exc))

    # a commit after every batch: the kill points come early, however fast the machine
    proc = subprocess.Popen(cli("build", lib, "--store", store, "--workers", "2",
                                "--batch-seconds", "1", "--commit-seconds", "0",
                                "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        if point == "lock":
            wait_for(lambda: os.path.exists(lock), 120, "the writer lock")
        elif point == "first_commit":
            wait_for(lambda: _commits(store) >= 1, 120, "1 commit")
        else:  # and the reader has seen a committed track
            wait_for(lambda: _commits(store) >= 2 and max(seen, default=-1) > 0, 120,
                     "2 commits, read")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        reader.join()
    assert not errors, errors[:3]
    assert seen == sorted(seen)  # what readers saw only grew

    n_ok = max(_committed_ok(store), 0)
    assert n_ok < 40, "the kill landed after the build"

    # the rerun in this process, on the session's cluster (the console script is killed above)
    res = run_cli(capsys, "build", lib, "--store", store, "--scheduler",
                  dask_client.scheduler.address, "--no-progress")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{40 - n_ok} extracted" in res.stdout and f"{n_ok} skipped" in res.stdout
    assert_same_build(store, reference, 40, n_tiles=80)  # statistics exact after the resume too


def _worker_monitoring() -> tuple[bool, float]:
    import dask
    from dask.utils import parse_timedelta

    return (dask.config.get("distributed.worker.profile.enabled"),
            parse_timedelta(dask.config.get("distributed.worker.memory.monitor-interval")))


def test_local_clusters_monitor_quietly_unless_asked(dask_client):
    """Our LocalCluster's workers run without Dask's 10 ms profiler and with slower monitors
    (7.5% off a 2-worker build on 2 cores); ``monitoring=True`` gives Dask's defaults back."""
    import dask

    from featurestore.cluster import connect

    assert set(dask_client.run(_worker_monitoring).values()) == {(False, 0.5)}
    assert dask.config.get("distributed.worker.profile.enabled")  # this process's: untouched
    with connect(n_workers=1, monitoring=True) as client:
        assert set(client.run(_worker_monitoring).values()) == {(True, 0.1)}
    with pytest.raises(ValueError, match="n_workers 0: must be at least 1"):
        with connect(n_workers=0):
            pass


def test_quiet_monitoring_as_environment_for_dask_commands():
    """``config_environ`` spells our settings as the variables that a scheduler or worker
    started with the ``dask`` commands reads (docs/operations.md, large clusters)."""
    from featurestore.cluster import QUIET_MONITORING, config_environ

    keys = list(QUIET_MONITORING)
    code = ("import dask, distributed, json; "
            f"print(json.dumps([dask.config.get(k) for k in {keys!r}]))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, **config_environ(QUIET_MONITORING)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == [v if isinstance(v, bool) else str(v)
                                      for v in QUIET_MONITORING.values()]
