"""Connecting to Dask: a running scheduler by address or scheduler file, or a LocalCluster.

The address comes from ``--scheduler``, ``--scheduler-file``, or Dask's own configuration
(``DASK_SCHEDULER_ADDRESS``); with none, a LocalCluster of single-threaded worker processes, one
per core, is started. SLURM and Kubernetes clusters (dask-jobqueue, dask-kubernetes) are used the
same way: start them, then pass their scheduler address or a ``Client``.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator

import dask
from distributed import Client, LocalCluster

from featurestore.errors import StoreError, check_counts

#: Environment of LocalCluster worker processes. One BLAS/FFT thread per process: the
#: parallelism is the processes (small matrix products with 2 BLAS threads on a busy machine
#: were 50x slower). Dask sets MALLOC_TRIM_THRESHOLD_=65536, and setting any trim threshold
#: turns off glibc's adaptive mmap threshold, so every ~1 MB decode block is mmapped and
#: page-faulted afresh: 92 ms instead of 51 ms a 60 s MP3 (benchmarks/build_throughput.py).
#: A 16 MiB mmap threshold keeps those blocks on the heap; a 64 MiB trim threshold still hands
#: memory back to the OS.
WORKER_ENVIRON = {
    "MALLOC_TRIM_THRESHOLD_": str(64 << 20),
    "MALLOC_MMAP_THRESHOLD_": str(16 << 20),
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


#: Dask's monitoring, made quieter in the LocalClusters started here: on a machine whose every
#: core runs a worker, the statistical profiler (every 10 ms), the event-loop tick (20 ms) and the
#: memory (100 ms) and system (500 ms) monitors wake processes that preempt the work and cool its
#: caches. Quieter, a 2-worker build on 2 cores ran 5-8% faster (medians of alternating runs:
#: ``benchmarks/build_throughput.py --compare-monitoring``). Dask's profile page stays empty;
#: ``connect(monitoring=True)`` keeps Dask's defaults.
QUIET_MONITORING = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "500ms",
}


def config_environ(config: dict) -> dict:
    """Dask settings as the environment variables Dask reads them from (``DASK_`` and the key's
    parts joined by ``__``), for schedulers and workers started with the ``dask`` commands."""
    return {"DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
            for key, value in config.items()}


def scheduler_address(scheduler: str | None = None) -> str | None:
    """The explicit address, else Dask's configured one (``DASK_SCHEDULER_ADDRESS``)."""
    return scheduler or dask.config.get("scheduler-address", None) or None


@contextlib.contextmanager
def connect(scheduler: str | None = None, scheduler_file: str | None = None,
            n_workers: int | None = None, processes: bool = True,
            memory_limit: str | float | None = "auto",
            monitoring: bool = False) -> Iterator[Client]:
    """Yield a Client: to ``scheduler``/``scheduler_file``/``DASK_SCHEDULER_ADDRESS`` if given,
    else to a new LocalCluster (closed on exit). ``processes=False`` runs workers as threads of
    this process, which ``memory://`` stores need; ``monitoring=True`` keeps Dask's profiler and
    monitors at their defaults (see :data:`QUIET_MONITORING`)."""
    check_counts(n_workers=n_workers)
    _one_cluster(None, scheduler, scheduler_file)
    if scheduler_file:
        wait_for_scheduler_file(scheduler_file)
        with Client(scheduler_file=scheduler_file) as client:
            yield client
        return
    address = scheduler_address(scheduler)
    if address:
        try:
            client = Client(address)
        except OSError as exc:
            named = "--scheduler" if scheduler else "DASK_SCHEDULER_ADDRESS"
            raise ValueError(f"{named} {address}: no scheduler answers there "
                             f"({str(exc).splitlines()[0]})") from None
        with client:
            yield client
        return
    workers = n_workers or min(os.cpu_count() or 1, 64)
    config = {"distributed.nanny.pre-spawn-environ": WORKER_ENVIRON,
              **({} if monitoring else QUIET_MONITORING)}
    # Only while the cluster starts: its scheduler, nannies and workers keep what they read
    # then (a restarted worker too), and the caller's configuration is left as it was.
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                               memory_limit=memory_limit, silence_logs=logging.ERROR,
                               dashboard_address=":0")
    with cluster, Client(cluster) as client:
        yield client


def check_cluster_request(doing: str, store_url: str, client: Client | None,
                          scheduler: str | None, scheduler_file: str | None,
                          n_workers: int | None) -> None:
    """Refuse a run's cluster options before the run touches the store: more than one
    cluster, a worker count beside a running cluster (which has its own workers), a
    ``memory://`` store (which lives in this process) on a remote cluster, a scheduler file
    that does not appear, and a LocalCluster started from a script without a ``__main__``
    guard. A LocalCluster's workers are spawned and each runs the main script again as it
    starts: unguarded, each would start the same run (a worker still starting refuses it)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(f"{doing} was called while a Dask worker process was starting, from "
                           "a script it runs again as it starts: put the call under "
                           "`if __name__ == \"__main__\":`")
    given = _one_cluster(client, scheduler, scheduler_file)
    running = given or (["DASK_SCHEDULER_ADDRESS"] if scheduler_address() else [])
    if running and n_workers:
        raise ValueError(f"n_workers (--workers) sizes the LocalCluster a run starts; the "
                         f"cluster of {running[0]} has its own workers")
    in_process = store_url.startswith("memory://")
    if in_process and (scheduler or scheduler_file or (client is None and running)):
        raise StoreError(f"a memory:// store lives in this process only; {doing} cannot run "
                         "on a remote cluster")
    script = None if running or in_process else _unguarded_script()
    if script:
        raise RuntimeError(f"{doing} starts a LocalCluster, whose worker processes each run "
                           f"{script} again as they start, and it has no `if __name__ == "
                           "\"__main__\":` guard: put the call under one")
    if scheduler_file:
        wait_for_scheduler_file(scheduler_file)


def _one_cluster(client: Client | None, scheduler: str | None,
                 scheduler_file: str | None) -> list[str]:
    """The names of the clusters given, refusing more than one."""
    given = [name for name, value in (("client", client), ("scheduler (--scheduler)", scheduler),
                                      ("scheduler_file (--scheduler-file)", scheduler_file))
             if value]
    if len(given) > 1:
        raise ValueError(f"give one of {' and '.join(given)}, not both")
    return given


def wait_for_scheduler_file(path: str) -> None:
    """Wait for a scheduler file as Dask's client does (the scheduler may be starting), but
    only as long as Dask waits to connect, not forever."""
    timeout = float(dask.utils.parse_timedelta(
        dask.config.get("distributed.comm.timeouts.connect"), default="s"))
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ValueError(f"--scheduler-file {path}: no such file (waited {timeout:.0f} s "
                             "for a scheduler to write it)")
        time.sleep(0.05)


def _unguarded_script() -> str | None:
    """The main script, where it is a file with no ``__main__`` guard in it."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or getattr(main, "__spec__", None) is not None:  # python -m: a module
        return None
    try:
        with open(path, encoding="utf-8") as source:
            return None if "__main__" in source.read() else path
    except (OSError, UnicodeDecodeError):
        return None


def cluster_for(store_url: str, client: Client | None = None, scheduler: str | None = None,
                scheduler_file: str | None = None, n_workers: int | None = None):
    """The cluster a run over the store at ``store_url`` uses, as a context manager: the
    ``client`` given, else :func:`connect`'s (a ``memory://`` store's LocalCluster runs
    threads of this process). :func:`check_cluster_request` has checked the options."""
    if client is not None:
        return contextlib.nullcontext(client)
    return connect(scheduler, scheduler_file, n_workers,
                   processes=not store_url.startswith("memory://"))
