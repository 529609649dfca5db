"""Dask worker processes' peak memory, sampled from outside, and CPU time (for the benchmarks).

``ru_maxrss`` cannot be used for spawned workers: Linux keeps a process's high-water mark
across ``exec``, so a worker reports at least the driver's size at the moment it was started.
"""

from __future__ import annotations

import os
import threading

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


def cpu_seconds(client) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by this process (the driver, with a
    LocalCluster's scheduler and nannies) and by all of ``client``'s worker processes."""
    workers = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
    return (sum(psutil.Process().cpu_times()[:2]),
            sum(sum(p.cpu_times()[:2]) for p in workers))
