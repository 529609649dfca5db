"""Builds on a scheduler and workers started as separate processes, and builds killed midway."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import featurestore
from tests.conftest import cli, small_library, track_tiles


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(what)


@pytest.fixture
def scheduler_and_workers(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes, as a user starts them."""
    sched_file = str(tmp_path / "scheduler.json")
    # the `dask` command of this interpreter's environment, else the one on PATH (a venv
    # with system site packages has it beside the base interpreter)
    beside = os.path.join(os.path.dirname(sys.executable), "dask")
    dask_cli = beside if os.path.exists(beside) else shutil.which("dask")
    procs = [subprocess.Popen([dask_cli, "scheduler", "--host", "127.0.0.1", "--port", "0",
                               "--dashboard-address", ":0", "--scheduler-file", sched_file],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        _wait_for(lambda: os.path.exists(sched_file) and os.path.getsize(sched_file) > 0, 60,
                  "scheduler file")
        for _ in range(2):
            procs.append(subprocess.Popen(
                [dask_cli, "worker", "--scheduler-file", sched_file, "--nthreads", "1",
                 "--nworkers", "1", "--no-dashboard"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
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
    lib = small_library(tmp_path / "lib", n=6, seconds=12.0)
    store = str(tmp_path / "store")
    res = subprocess.run(cli("build", lib, "--store", store, "--scheduler", address,
                             "--batch-seconds", "5", "--no-progress"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "6 extracted" in res.stdout
    # The same through DASK_SCHEDULER_ADDRESS and a scheduler file: nothing left to do.
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
    res = subprocess.run(cli("build", lib, "--store", store, "--no-progress"), env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "nothing to do" in res.stdout, res.stderr
    res = subprocess.run(cli("build", lib, "--store", store, "--scheduler-file", sched_file,
                             "--rebuild", "--no-progress"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0 and "6 extracted" in res.stdout, res.stderr
    from distributed import Client
    with Client(address) as client:
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert len(workers) == 2
    assert list(featurestore.open(store).tracks()["status"]) == ["ok"] * 6


def test_killed_build_resumes_to_identical_tiles(tmp_path):
    """SIGKILL the whole build (driver and its LocalCluster) after its first commit; the store
    stays readable with whole tracks only, and a rerun equals an uninterrupted build."""
    lib = small_library(tmp_path / "lib", n=40, seconds=20.0)
    reference = str(tmp_path / "reference")
    featurestore.build(lib, reference, n_workers=2, progress=False, batch_seconds=1.0)

    store = str(tmp_path / "store")
    proc = subprocess.Popen(cli("build", lib, "--store", store, "--workers", "2",
                                "--batch-seconds", "1", "--no-progress"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        log_dir = None

        def committed():
            nonlocal log_dir
            if log_dir is None:
                try:
                    log_dir = os.path.join(featurestore.open(store).feature_set().url,
                                           "manifest", "log")
                except Exception:
                    return False
            return os.path.isdir(log_dir) and any(n.endswith(".parquet")
                                                  for n in os.listdir(log_dir))
        _wait_for(committed, 120, "first commit")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    partial = featurestore.open(store).tracks()
    n_ok = int((partial["status"] == "ok").sum())
    assert 0 < n_ok < 40, f"kill landed outside the build ({n_ok} tracks committed)"
    assert set(partial["status"]) <= {"ok", "pending"}
    done = track_tiles(store)  # every committed track reads whole
    assert all(t.shape == (2, 40, 100) for t in done.values())

    res = subprocess.run(cli("build", lib, "--store", store, "--workers", "2", "--no-progress"),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"{40 - n_ok} extracted" in res.stdout and f"{n_ok} skipped" in res.stdout
    expected, got = track_tiles(reference), track_tiles(store)
    assert expected.keys() == got.keys() and len(got) == 40
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key])
    # Statistics are exact after the resume too.
    m1, s1, c1 = featurestore.open(reference).feature_set().statistics()
    m2, s2, c2 = featurestore.open(store).feature_set().statistics()
    assert c1 == c2 == 80
    np.testing.assert_allclose(m2, m1, atol=1e-4)
    np.testing.assert_allclose(s2, s1, atol=1e-3)
