"""What the benchmarks measure with: the peak memory of this process and of Dask workers, CPU
time, and plain processes started together (the same work with no Dask and no driver).

``ru_maxrss`` cannot be used for spawned workers: Linux keeps a process's high-water mark
across ``exec``, so a worker reports at least the driver's size at the moment it was started.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import psutil


class WorkerPeaks:
    """Sample the RSS of every worker process of ``client`` every ``interval`` seconds while
    the ``with`` block runs; ``peaks_mib`` holds each worker's maximum."""

    def __init__(self, client, interval: float = 0.05):
        self.client, self.interval = client, interval
        self.peaks: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        procs = [psutil.Process(pid) for pid in self.client.run(os.getpid).values()]
        while True:
            for p in procs:
                try:
                    self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.NoSuchProcess:
                    continue
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peaks_mib(self) -> list[int]:
        return sorted(round(v / 2 ** 20) for v in self.peaks.values())


def driver_threads_cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process's main thread (the build's driver: planning,
    submitting, committing) and of all its other threads (with a LocalCluster, the scheduler and
    the client's event loop; with a remote scheduler, the client's event loop alone)."""
    main = threading.main_thread().native_id
    by_thread = {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}
    return by_thread.get(main, 0.0), sum(by_thread.values()) - by_thread.get(main, 0.0)


def task_summary(records: list[dict], started: float, wall: float) -> dict:
    """Where the workers' wall time went, from Dask task-stream ``records`` of a run that began
    at ``started`` (``time.time()``) and took ``wall`` seconds: compute time per task prefix
    (``extract``, ``meta``, ``write``), and per worker the mean idle time before its first task,
    after its last, and in all (start, round trips, tail)."""
    spans: dict[str, list[tuple[float, float]]] = {}
    prefixes: dict[str, list[float]] = {}
    for record in records:
        prefix = str(record["key"]).strip("('\"").split("-", 1)[0]
        for s in record["startstops"]:
            if s["action"] == "compute":
                spans.setdefault(record["worker"], []).append((s["start"], s["stop"]))
                prefixes.setdefault(prefix, []).append(s["stop"] - s["start"])
    if not spans:
        return {"workers_seen": 0}
    busy = sum(b - a for runs in spans.values() for a, b in runs)
    n = len(spans)
    return {
        "workers_seen": n,
        "busy_s": busy,
        "tasks": {k: {"count": len(v), "compute_s": sum(v)} for k, v in prefixes.items()},
        "idle_per_worker_s": (n * wall - busy) / n,
        "idle_before_first_s": float(sum(min(a for a, _ in r) - started
                                         for r in spans.values()) / n),
        "idle_after_last_s": float(sum(started + wall - max(b for _, b in r)
                                       for r in spans.values()) / n),
    }


def cpu_seconds(client) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process (the driver, with a
    LocalCluster's scheduler and nannies) and by all of ``client``'s worker processes."""
    workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
    return (sum(psutil.Process().cpu_times()[:2]),
            sum(sum(p.cpu_times()[:2]) for p in workers))


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) * 1024


class PeakRss:
    """Peak resident memory of this process above its level on entry: the kernel's high-water
    mark (``VmHWM``), reset on entry, so that no peak falls between samples."""

    def __enter__(self) -> PeakRss:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        self.base = _status("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        self.peak = _status("VmHWM")

    @property
    def above_base(self) -> int:
        return self.peak - self.base


def _pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def together(fn, arg_lists: list[tuple], environ: dict | None = None) -> list:
    """``fn(*args)`` for each of ``arg_lists``, each in its own fresh (spawned) process with
    ``environ`` added to its environment; the calls start once every process is up, so they
    run at the same time. Returns their results in order."""
    n = len(arg_lists)
    saved = {k: os.environ.get(k) for k in environ or {}}
    os.environ.update(environ or {})  # spawned processes take this process's environment
    try:
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
            up: set[int] = set()
            while len(up) < n:
                up |= set(pool.map(_pid_after, [0.2] * n))
            return list(pool.map(fn, *zip(*arg_lists)))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
