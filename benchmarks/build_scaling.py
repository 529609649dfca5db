"""The build on N workers of one machine, beside N plain processes (run by hand).

    PYTHONPATH=. python benchmarks/build_scaling.py --minutes 960 --distinct 32 \\
        --workers 1 4 8 16 --minutes-per-worker 240 --out /tmp/scaling --results DIR

Makes a library of 60 s MP3 cues (the demo's synthesis; with ``--distinct K`` only K cues are
synthesized, in ``--processes`` processes, and the rest are copies under their own names), then
for each N of ``--workers``:

1. builds the first ``min(--minutes, N x --minutes-per-worker)`` minutes of it on a fresh
   LocalCluster of N worker processes, timing only the build: audio s / wall s, CPU seconds of
   the workers, of the driver's main thread and of its other threads (the LocalCluster's
   scheduler and the client's event loop), and from Dask's task stream the compute time of each
   kind of task and each worker's idle time before its first and after its last task;
2. runs the ceiling: the same extraction (``featurestore.extract.extract_track``) over the same
   files in N plain processes (no Dask, no driver, nothing written), started together.

and prints each N's efficiency against N times the 1-worker rate and against the N-process
ceiling. Every stage's results are written to ``DIR/build_scaling.json`` as soon as it ends; a
stage that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
import traceback

from build_throughput import make_library, measured_build, plain_processes

from catalogs.reader import read_catalog
from catalogs.writer import write_catalog


class Results:
    """The JSON file of results, rewritten after every stage."""

    def __init__(self, directory: str, meta: dict):
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "build_scaling.json")
        self.data = {"meta": meta, "stages": {}}
        self.save()

    def save(self) -> None:
        with open(self.path + ".part", "w") as f:
            json.dump(self.data, f, indent=1, default=str)
        os.replace(self.path + ".part", self.path)

    def stage(self, name: str, fn, *args, **kwargs):
        """Run one stage, record its result (or its error) and save; returns the result."""
        started = time.perf_counter()
        try:
            result = fn(*args, **kwargs)
            record = {"ok": True, **result}
        except Exception as exc:  # a failed stage must not lose the others' results
            traceback.print_exc()
            result, record = None, {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        record["stage_wall_s"] = time.perf_counter() - started
        self.data["stages"][name] = record
        self.save()
        return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def sub_catalog(catalog: str, n_tracks: int) -> str:
    """A catalog of the first ``n_tracks`` tracks of ``catalog`` (written beside it)."""
    frame = read_catalog(catalog).frame.head(n_tracks)
    out = os.path.join(os.path.dirname(catalog), f"catalog-{n_tracks}.csv")
    return write_catalog(out, frame.to_dict("records"))


def build_stage(catalog: str, store: str, workers: int) -> dict:
    m = measured_build(catalog, store, workers)
    report = m.pop("report")
    m.update(audio_s=report.audio_seconds, tracks=report.built, commits=report.commits,
             failures=len(report.failures), rate=report.audio_seconds / m["wall_s"])
    extract = m["task_stream"].get("tasks", {}).get("extract", {})
    if extract:
        # Compute seconds per audio second: grows with N when the cores slow each other.
        m["extract_s_per_audio_s"] = extract["compute_s"] / max(report.audio_seconds, 1e-9)
        m["extract_tasks"] = extract["count"]
    print(f"build, {workers:2d} worker(s): {m['rate']:8.1f} audio s / wall s "
          f"({report.audio_seconds:.0f} s audio, {report.built} tracks in {m['wall_s']:.2f} s; "
          f"{report.commits} commits; {m['task_stream'].get('tasks')})", flush=True)
    print(f"    CPU: workers {m['workers_cpu_s']:.2f} s, driver main thread "
          f"{m['driver_main_thread_cpu_s']:.2f} s, scheduler + event loop "
          f"{m['driver_other_threads_cpu_s']:.2f} s; per worker idle "
          f"{m['task_stream'].get('idle_per_worker_s', 0):.2f} s: "
          f"{m['task_stream'].get('idle_before_first_s', 0):.2f} s before its first task, "
          f"{m['task_stream'].get('idle_after_last_s', 0):.2f} s after its last", flush=True)
    return m


def plain_stage(paths: list[str], n: int) -> dict:
    rate = plain_processes(paths, n)
    print(f"plain, {n:2d} process(es): {rate:8.1f} audio s / wall s ({len(paths)} files)",
          flush=True)
    return {"rate": rate, "files": len(paths)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=960.0, help="library size")
    parser.add_argument("--minutes-per-worker", type=float, default=None,
                        help="an N-worker run takes the first N x this many minutes (default: "
                             "the whole library every time)")
    parser.add_argument("--distinct", type=int, default=None,
                        help="cues synthesized; the rest of the library copies them")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes synthesizing the library")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--no-plain", action="store_true", help="skip the plain processes")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out",
                                                      "scaling"),
                        help="library and stores")
    parser.add_argument("--results", default=None, help="directory of the JSON results "
                                                        "(default: --out)")
    args = parser.parse_args()
    results = Results(args.results or args.out, {
        "argv": vars(args), "commit": _commit(), "cpus": os.cpu_count(),
        "machine": platform.platform(), "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S")})

    lib = results.stage("library", lambda: _library(args))
    if lib is None:
        return
    catalog, n_tracks = lib["catalog"], lib["tracks"]
    paths = [str(p) for p in read_catalog(catalog).frame["path"]]
    for n in args.workers:
        size = n_tracks if args.minutes_per_worker is None else min(
            n_tracks, max(1, int(n * args.minutes_per_worker)))
        cat = catalog if size == n_tracks else sub_catalog(catalog, size)
        results.stage(f"build-{n}", build_stage, cat, os.path.join(args.out, "store"), n)
        if not args.no_plain:
            results.stage(f"plain-{n}", plain_stage, paths[:size], n)
    summary = _summary(results.data["stages"], args.workers)
    results.data["summary"] = summary
    results.save()
    print(f"results: {results.path}")


def _library(args) -> dict:
    t0 = time.perf_counter()
    catalog = make_library(os.path.join(args.out, "mp3-library"), args.minutes,
                           distinct=args.distinct, processes=args.processes)
    n = len(read_catalog(catalog).frame)
    print(f"library: {n} MP3 cues of 60 s ({args.distinct or n} distinct), ready in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    return {"catalog": catalog, "tracks": n}


def _summary(stages: dict, workers: list[int]) -> dict:
    """Each N's efficiency against N times the 1-worker rate and against the ceiling."""
    one = stages.get(f"build-{min(workers)}", {})
    base = one.get("rate", 0) / min(workers) if one.get("ok") else 0
    out = {}
    for n in workers:
        build, plain = stages.get(f"build-{n}", {}), stages.get(f"plain-{n}", {})
        if not build.get("ok"):
            continue
        row = {"rate": build["rate"]}
        if base:
            row["efficiency_vs_1_worker"] = build["rate"] / (n * base)
        if plain.get("ok"):
            row["ceiling_rate"] = plain["rate"]
            row["efficiency_vs_ceiling"] = build["rate"] / plain["rate"]
            if base:
                row["ceiling_vs_1_worker"] = plain["rate"] / (n * base)
        row["driver_cpu_share"] = ((build["driver_main_thread_cpu_s"]
                                    + build["driver_other_threads_cpu_s"])
                                   / max(build["workers_cpu_s"], 1e-9))
        out[n] = row
        print(f"{n:2d} workers: {row['rate']:8.1f} audio s / wall s; "
              + "; ".join(f"{k} {v:.3f}" for k, v in row.items() if k != "rate"), flush=True)
    return out


if __name__ == "__main__":
    main()
