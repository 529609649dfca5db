"""The build's driver and a real Dask scheduler against 64 and 256 simulated workers (run by
hand).

    python benchmarks/build_simulation.py --workers 64 256 --hours 100 --slowdown 20

Runs the real driver (``featurestore.build``: planning, batches, writes, commits, statistics)
against a real ``dask scheduler`` process and N real single-threaded Dask workers, hosted
``--per-host`` to a process (the work is sleeps), whose extraction is
:class:`simulated_work.MeasuredTimeExtraction`: each track takes our extraction's measured time
per audio second (measured here on a real cue, or ``--rate`` audio s / wall s per worker), times
``--slowdown``, and yields real tiles, which the workers write into a real store. The library is
``--hours`` of sparse ``--track-seconds`` MP3-sized files.

The slowdown stretches the tasks so that 2 cores can write N workers' real tiles; what the driver
and the scheduler do per task and per commit does not depend on it. Printed and written to
``--out/build_simulation.json`` (after every run): wall time, CPU seconds of the driver's main
thread (planning, submitting, committing), of its event loop, of the scheduler process and of
the worker hosts; the same per task and per commit; each worker's idle time before its first and
after its last task; the simulated efficiency (extraction time / (N x wall)); and, at the real
rate, the driver and scheduler's cost as a share of one worker's work, and the projected
efficiency (see :func:`projection`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import psutil
from build_throughput import make_library
from measuring import driver_threads_cpu, task_summary, together
from simulated_work import (MeasuredTimeExtraction, seconds_per_audio_second, sparse_library,
                            template_tiles)

import featurestore
from catalogs.writer import write_catalog
from featurestore.cluster import QUIET_MONITORING, WORKER_ENVIRON, config_environ
from featurestore.spec import FeatureSpec

HERE = os.path.dirname(os.path.abspath(__file__))


class SimulatedCluster:
    """A ``dask scheduler`` process and worker-host processes of ``per_host`` workers each."""

    def __init__(self, n_workers: int, per_host: int, directory: str):
        self.n, self.per_host = n_workers, per_host
        self.scheduler_file = os.path.join(directory, "scheduler.json")
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> SimulatedCluster:
        from distributed import Client

        # Dask's monitoring as featurestore's LocalClusters run it (and docs/operations.md
        # advises for workers started by hand): at Dask's defaults, the profiler, ticks and
        # monitors of 256 workers woke their hosts tens of thousands of times a second.
        env = {**os.environ, **WORKER_ENVIRON, **config_environ(QUIET_MONITORING),
               "PYTHONPATH": os.pathsep.join(
            [os.path.dirname(HERE), HERE, os.environ.get("PYTHONPATH", "")])}
        if os.path.exists(self.scheduler_file):
            os.remove(self.scheduler_file)
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
             "--port", "0", "--no-dashboard", "--scheduler-file", self.scheduler_file],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(self.scheduler)
        while not os.path.exists(self.scheduler_file):
            time.sleep(0.1)
        left = self.n
        while left:
            k = min(self.per_host, left)
            self.procs.append(subprocess.Popen(
                [sys.executable, os.path.join(HERE, "simulated_work.py"), self.scheduler_file,
                 str(k)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            left -= k
        self.client = Client(scheduler_file=self.scheduler_file)
        self.client.wait_for_workers(self.n, timeout=300)
        return self

    def cpu(self) -> tuple[float, float]:
        """CPU seconds so far of the scheduler process and of all worker hosts."""
        def of(p):
            return sum(psutil.Process(p.pid).cpu_times()[:2])
        return of(self.scheduler), sum(of(p) for p in self.procs[1:])

    def __exit__(self, *exc) -> None:
        self.client.close()
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def simulated_build(catalog: str, store: str, n_workers: int, per_host: int,
                    extraction: MeasuredTimeExtraction, idle_seconds: float = 5.0,
                    **build_kwargs) -> dict:
    """One build on a :class:`SimulatedCluster`; the measures of the module's docstring."""
    from distributed import get_task_stream

    shutil.rmtree(store, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp, SimulatedCluster(n_workers, per_host, tmp) as c:
        # Imports and the template's tiles once per worker host, as a warm cluster has them.
        c.client.run(template_tiles, extraction.template, FeatureSpec())
        # The scheduler's CPU with nothing to do (heartbeats, monitors): a cost per second
        # that the slowdown stretches, told apart from its cost per task.
        idle0, _ = c.cpu()
        time.sleep(idle_seconds)
        idle = (c.cpu()[0] - idle0) / idle_seconds
        sched0, hosts0 = c.cpu()
        main0, loop0 = driver_threads_cpu()
        with get_task_stream(c.client) as stream:
            start, started = time.perf_counter(), time.time()
            report = featurestore.build(catalog, store, client=c.client, progress=False,
                                        extractor=extraction, log=lambda _: None,
                                        **build_kwargs)
            wall = time.perf_counter() - start
        sched1, hosts1 = c.cpu()
        main1, loop1 = driver_threads_cpu()
    tasks = task_summary(stream.data, started, wall)
    n_batches = tasks["tasks"]["extract"]["count"]
    out = {"workers": n_workers, "wall_s": wall, "audio_s": report.audio_seconds,
           "tracks": report.built, "batches": n_batches, "commits": report.commits,
           "tiles": report.tiles_written, "failures": len(report.failures),
           "driver_main_cpu_s": main1 - main0, "driver_loop_cpu_s": loop1 - loop0,
           "scheduler_cpu_s": sched1 - sched0, "worker_hosts_cpu_s": hosts1 - hosts0,
           "task_stream": tasks}
    driver = out["driver_main_cpu_s"] + out["driver_loop_cpu_s"]
    out["driver_cpu_per_batch_ms"] = 1000 * driver / n_batches
    out["driver_cpu_per_commit_ms"] = 1000 * driver / max(report.commits, 1)
    out["scheduler_idle_cpu_per_s"] = idle
    out["scheduler_cpu_per_batch_ms"] = 1000 * (out["scheduler_cpu_s"] - idle * wall) / n_batches
    out["simulated_efficiency"] = (tasks["tasks"]["extract"]["compute_s"]
                                   / (n_workers * wall))
    return out


def projection(run: dict, seconds_per_audio_s: float, slowdown: float) -> dict:
    """The run at the real rate (slowdown 1).

    ``work`` is one worker's share of the extraction at the real rate. The driver's and the
    scheduler's CPU at that rate is their CPU per batch times the batches, plus the scheduler's
    idle CPU per second over ``work``: ``cost_share`` is that against the workers' work (N x
    ``work``: the issue's target is under 5%), and ``serial_load`` against ``work`` alone, the
    share of one core that the driver and the scheduler keep busy (near 1 they would keep
    workers waiting). The projected wall time adds to ``work`` each worker's idle time before
    its first task (planning, submitting: not stretched by the slowdown) and after its last
    (the tail: stretched, so divided by the slowdown).
    """
    work = run["audio_s"] * seconds_per_audio_s / run["workers"]
    t = run["task_stream"]
    serial = (run["driver_main_cpu_s"] + run["driver_loop_cpu_s"]
              + run["scheduler_cpu_per_batch_ms"] * run["batches"] / 1000
              + run["scheduler_idle_cpu_per_s"] * work)
    wall = work + t["idle_before_first_s"] + t["idle_after_last_s"] / slowdown
    return {"work_per_worker_s": work, "driver_scheduler_cpu_s": serial,
            "cost_share": serial / (run["workers"] * work), "serial_load": serial / work,
            "projected_wall_s": wall, "projected_efficiency": work / wall}


def planning_seconds_per_track(directory: str, n_tracks: int) -> float:
    """The driver's work before the first task, per track, over a catalog of ``n_tracks``
    sparse files: reading the catalog, fingerprinting the files, planning, batching."""
    from catalogs.reader import read_catalog
    from featurestore.manifest import empty_frame
    from featurestore.planning import make_batches, plan_build, stat_files

    rows = sparse_library(os.path.join(directory, "sparse"), n_tracks, 60.0)
    catalog = write_catalog(os.path.join(directory, f"catalog-{n_tracks}.csv"), rows)
    start = time.perf_counter()
    frame = read_catalog(catalog).frame
    plan = plan_build("planning", frame, empty_frame(), stat_files(frame["path"].tolist()))
    make_batches(plan.to_build, plan.estimated_seconds, 256, 256 * FeatureSpec().tile_seconds)
    return (time.perf_counter() - start) / n_tracks


def rebuild_estimate(hours: float, workers: int, run: dict, seconds_per_audio_s: float,
                     planning_per_track: float, machine_efficiency: float) -> dict:
    """A ``hours`` rebuild of 60 s tracks on ``workers`` workers, from a simulated ``run``'s
    driver and scheduler CPU per batch (the batches counted by ``make_batches`` as the build
    makes them), the planning time per track, and ``machine_efficiency``: the share of N
    cores' rate that N workers of one machine reach (measured on one machine)."""
    from featurestore.build_tasks import TrackTask
    from featurestore.planning import make_batches

    n_tracks = int(hours * 60)
    tasks = [TrackTask(f"t{i}", "") for i in range(n_tracks)]
    seconds = {t.track_id: 60.0 for t in tasks}
    batches = len(make_batches(tasks, seconds, workers, 256 * FeatureSpec().tile_seconds))
    work = hours * 3600 * seconds_per_audio_s / workers
    per_batch = (run["driver_cpu_per_batch_ms"] + run["scheduler_cpu_per_batch_ms"]) / 1000
    serial = batches * per_batch + run["scheduler_idle_cpu_per_s"] * work
    planning = planning_per_track * n_tracks
    wall = planning + work / machine_efficiency
    return {"workers": workers, "batches": batches, "work_per_worker_s": work,
            "planning_s": planning, "driver_scheduler_cpu_s": serial,
            "cost_share": serial / (workers * work), "serial_load": serial / wall,
            "wall_s": wall, "efficiency": work / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--hours", type=float, default=100.0, help="library size")
    parser.add_argument("--track-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=None,
                        help="audio s / wall s of one worker (default: measured here)")
    parser.add_argument("--slowdown", type=float, default=20.0)
    parser.add_argument("--per-host", type=int, default=32, help="workers per host process")
    parser.add_argument("--commit-seconds", type=float, default=1.0)
    parser.add_argument("--out", default=os.path.join(HERE, "out", "simulation"))
    parser.add_argument("--rebuild-hours", type=float, default=10_000.0)
    parser.add_argument("--rebuild-workers", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--machine-efficiency", type=float, default=0.72,
                        help="16 workers' share of 16 x the 1-worker rate on one machine")
    parser.add_argument("--planning-tracks", type=int, default=60_000)
    parser.add_argument("--estimate-only", metavar="JSON", default=None,
                        help="only the rebuild estimate, from a results file this script wrote")
    args = parser.parse_args()
    if args.estimate_only:
        with open(args.estimate_only) as f:
            results = json.load(f)
        if args.rate:  # a rate measured elsewhere replaces the one the simulation assumed
            results["seconds_per_audio_s"] = 1 / args.rate
        print_estimates(results, args)
        return
    os.makedirs(args.out, exist_ok=True)
    spec = FeatureSpec()
    make_library(os.path.join(args.out, "template"), 1)  # one real cue, whose tiles repeat
    template = os.path.join(args.out, "template", "cue0000.mp3")
    per_s = 1 / args.rate if args.rate else together(
        seconds_per_audio_second, [(template, spec)], WORKER_ENVIRON)[0]
    print(f"extraction: {1 / per_s:.0f} audio s / wall s per worker "
          f"({'given' if args.rate else 'measured here on one core'}); slowdown {args.slowdown}")
    n_tracks = int(args.hours * 3600 / args.track_seconds)
    rows = sparse_library(os.path.join(args.out, "sparse"), n_tracks, args.track_seconds)
    catalog = write_catalog(os.path.join(args.out, f"catalog-{n_tracks}.csv"), rows)
    extraction = MeasuredTimeExtraction(per_s, template, args.slowdown)
    results = {"args": vars(args), "seconds_per_audio_s": per_s, "runs": []}
    path = os.path.join(args.out, "build_simulation.json")
    for n in args.workers:
        run = simulated_build(catalog, os.path.join(args.out, "store"), n, args.per_host,
                              extraction, commit_seconds=args.commit_seconds)
        run["projection"] = projection(run, per_s, args.slowdown)
        results["runs"].append(run)
        with open(path, "w") as f:
            json.dump(results, f, indent=1)
        t, p = run["task_stream"], run["projection"]
        print(f"{n} workers, {args.hours:g} h in {n_tracks} tracks: {run['wall_s']:.1f} s wall, "
              f"{run['batches']} batches, {run['commits']} commits, simulated efficiency "
              f"{run['simulated_efficiency']:.3f}")
        print(f"  CPU: driver main {run['driver_main_cpu_s']:.2f} s + event loop "
              f"{run['driver_loop_cpu_s']:.2f} s ({run['driver_cpu_per_batch_ms']:.1f} ms a "
              f"batch, {run['driver_cpu_per_commit_ms']:.1f} ms a commit); scheduler "
              f"{run['scheduler_cpu_s']:.2f} s ({run['scheduler_cpu_per_batch_ms']:.1f} ms a "
              f"batch); worker hosts {run['worker_hosts_cpu_s']:.1f} s")
        print(f"  per worker idle: {t['idle_before_first_s']:.2f} s before its first task, "
              f"{t['idle_after_last_s']:.2f} s after its last; at the real rate: work "
              f"{p['work_per_worker_s']:.1f} s a worker; driver + scheduler "
              f"{p['driver_scheduler_cpu_s']:.1f} s CPU, {p['cost_share']:.2%} of the "
              f"workers' work, {p['serial_load']:.0%} of one core; projected efficiency "
              f"{p['projected_efficiency']:.3f}", flush=True)
    print_estimates(results, args)
    with open(path, "w") as f:
        json.dump(results, f, indent=1)
    print(f"results: {path}")


def print_estimates(results: dict, args) -> None:
    """The rebuild estimate of each of ``--rebuild-workers``, from the simulated run with the
    nearest number of workers; stored in ``results['rebuild']``."""
    per_track = planning_seconds_per_track(args.out, args.planning_tracks)
    print(f"planning: {per_track * 1e6:.0f} us a track ({args.planning_tracks} tracks); "
          f"{args.rebuild_hours:g} h of 60 s tracks, {1 / results['seconds_per_audio_s']:.0f} "
          f"audio s / wall s per worker, one-machine efficiency {args.machine_efficiency}")
    results["rebuild"] = []
    for n in args.rebuild_workers:
        run = min(results["runs"], key=lambda r: abs(r["workers"] - n))
        e = rebuild_estimate(args.rebuild_hours, n, run, results["seconds_per_audio_s"],
                             per_track, args.machine_efficiency)
        results["rebuild"].append(e)
        print(f"  {n:3d} workers: {e['wall_s'] / 60:6.1f} min (planning {e['planning_s']:.0f} s, "
              f"work {e['work_per_worker_s']:.0f} s a worker), efficiency {e['efficiency']:.3f}; "
              f"{e['batches']} batches, driver + scheduler {e['driver_scheduler_cpu_s']:.0f} s "
              f"CPU ({e['cost_share']:.2%} of the work, {e['serial_load']:.0%} of one core; "
              f"per batch from the {run['workers']}-worker run)")


if __name__ == "__main__":
    main()
