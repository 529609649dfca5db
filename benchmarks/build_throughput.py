"""Build throughput, scaling, worker memory and no-op rebuild time (run by hand).

    python benchmarks/build_throughput.py [--minutes 60] [--rounds 5] [--out benchmarks/out]

Prints, for a generated library of MP3 film cues (the demo's synthesis, 44.1 kHz stereo):
1. in each of ``--rounds`` rounds, audio seconds per wall second per core: a plain loop of
   ``librosa.load(sr=22050)`` + ``librosa.feature.mfcc`` over the same files, then our build on 1
   and on 2 worker processes, and the ratios (targets: ours/loop >= 1.5 per core; 2 workers / 1
   >= 1.8); beside them, the same extraction in 1 and in 2 plain processes with no Dask and
   no driver, whose ratio is what 2 cores allow at most; then the median and range of each
   ratio over the rounds;
2. peak RSS per worker during a build with a 60-minute MP3 in the library (target < 1 GiB);
3. the wall time of a rebuild with nothing to do, for a catalog of 10,000 tracks (target < 10 s).

``--stages FILES`` only times each stage of both paths (decode, resample, the whole extraction;
``librosa.load``, + ``mfcc``) per file, in a plain process.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import soundfile as sf
from measuring import WorkerPeaks, cpu_seconds, driver_threads_cpu, task_summary, together

from catalogs.demo import FILMS, synthesize
from catalogs.writer import write_catalog


def _write_cue(path: str, i: int, seconds: float) -> None:
    """The demo's synthesis of cue ``i`` as a 44.1 kHz stereo MP3 (written atomically)."""
    y = synthesize(FILMS[i % len(FILMS)][3], seconds, 44100, np.random.default_rng(i))
    sf.write(path + ".part", np.stack([y, y * 0.9], axis=1), 44100, format="MP3")
    os.replace(path + ".part", path)


def make_library(directory: str, minutes: float, seconds_each: float = 60.0,
                 distinct: int | None = None, processes: int = 1) -> str:
    """MP3 cues of ``seconds_each`` s until ``minutes`` of audio; reused when present.

    With ``distinct``, only that many cues are synthesized and the others are copies of them
    under their own names (the build decodes every file; synthesis is the slow part of making a
    large library). ``processes`` synthesize in parallel."""
    os.makedirs(directory, exist_ok=True)
    n = int(np.ceil(minutes * 60 / seconds_each))
    k = min(distinct or n, n)
    paths = [os.path.join(directory, f"cue{i:04d}.mp3") for i in range(n)]
    todo = [(paths[i], i, seconds_each) for i in range(k) if not os.path.exists(paths[i])]
    if processes > 1 and len(todo) > 1:
        with ProcessPoolExecutor(processes) as pool:
            list(pool.map(_write_cue, *zip(*todo)))
    else:
        for args in todo:
            _write_cue(*args)
    rows = []
    for i, path in enumerate(paths):
        if not os.path.exists(path):
            shutil.copyfile(paths[i % k], path + ".part")
            os.replace(path + ".part", path)
        film, composer, year, genres = FILMS[i % len(FILMS)]
        rows.append({"track_id": f"cue{i:04d}", "path": path, "film": film, "year": year,
                     "genres": "|".join(genres)})
    return write_catalog(os.path.join(directory, "catalog.csv"), rows)


def librosa_mfcc(path: str) -> float:
    """The obvious alternative for one file: ``librosa.load`` + ``feature.mfcc`` with the
    study's parameters; returns the audio seconds."""
    import librosa

    y, sr = librosa.load(path, sr=22050)
    librosa.feature.mfcc(y=y, sr=sr, n_mfcc=41, n_fft=2048, hop_length=2048)
    return len(y) / sr


def librosa_loop(paths: list[str]) -> tuple[float, float]:
    """(audio seconds, wall seconds) of the obvious alternative, in this one process."""
    import librosa

    librosa.feature.mfcc(y=np.zeros(22050, dtype=np.float32), sr=22050)  # warm numba once
    start = time.perf_counter()
    audio = sum(librosa_mfcc(p) for p in paths)
    return audio, time.perf_counter() - start


def _extract_all(paths: list[str]) -> tuple[float, float]:
    """(audio seconds, wall seconds) of our extraction over ``paths`` in this process, as a
    build worker runs it but with no Dask and nothing written."""
    from featurestore.extract import extract_track
    from featurestore.spec import FeatureSpec

    spec = FeatureSpec()
    extract_track(paths[0], spec)  # warm up, as the build's workers are
    start = time.perf_counter()
    audio = sum(r.duration_s for r in (extract_track(p, spec) for p in paths))
    return audio, time.perf_counter() - start


def stage_times(paths: list[str], passes: int = 3) -> dict[str, list[float]]:
    """Milliseconds per file of each stage of both paths, in each of ``passes`` passes over
    ``paths``, in this process (run it in a plain process with the workers' environment)."""
    import librosa

    from featurestore.audio import BLOCK_FRAMES, AudioInfo, mono_blocks, open_audio
    from featurestore.extract import extract_track
    from featurestore.spec import FeatureSpec

    spec = FeatureSpec()

    def decode(p):
        with sf.SoundFile(p) as f:
            while len(f.read(BLOCK_FRAMES, dtype="float32", always_2d=True)) == BLOCK_FRAMES:
                pass

    def decode_mono_resample(p):
        with open_audio(p) as sound:
            for _ in mono_blocks(sound, spec.sample_rate, AudioInfo(0, 0)):
                pass

    named = {"libsndfile decode": decode, "+ downmix + soxr HQ": decode_mono_resample,
             "our extraction (extract_track)": lambda p: extract_track(p, spec),
             "librosa.load(sr=22050)": lambda p: librosa.load(p, sr=22050),
             "librosa.load + feature.mfcc": librosa_mfcc}
    times: dict[str, list[float]] = {name: [] for name in named}
    for fn in named.values():
        fn(paths[0])  # warm up
    for _ in range(passes):
        for name, fn in named.items():
            start = time.perf_counter()
            for p in paths:
                fn(p)
            times[name].append((time.perf_counter() - start) / len(paths) * 1000)
    return times


def plain_processes(paths: list[str], n: int) -> float:
    """Audio seconds per wall second of ``n`` plain processes (no Dask, no driver) extracting
    ``paths`` split between them, started together: the ceiling for ``n`` workers here."""
    from featurestore.cluster import WORKER_ENVIRON

    # the build's workers' environment
    results = together(_extract_all, [(paths[i::n],) for i in range(n)], WORKER_ENVIRON)
    return sum(a for a, _ in results) / max(w for _, w in results)


def _warm_worker() -> None:
    from featurestore.mfcc import _kernels
    from featurestore.spec import FeatureSpec

    _kernels(FeatureSpec())


def measured_build(catalog: str, store: str, workers: int, monitoring: bool = False,
                   **kwargs) -> dict:
    """Build on a fresh LocalCluster of ``workers`` processes; time only the build itself.

    Returns the report, wall seconds, peak worker RSS (MiB), CPU seconds of the workers, of the
    driver's main thread and of the driver process's other threads (the LocalCluster's
    scheduler and the client's event loop), and the task stream's summary
    (:func:`measuring.task_summary`)."""
    from distributed import get_task_stream

    import featurestore
    from featurestore.cluster import connect

    shutil.rmtree(store, ignore_errors=True)
    with connect(n_workers=workers, monitoring=monitoring) as client:
        # One-time start-up (imports, librosa's filterbank) is excluded, as the loop's is.
        client.run(_warm_worker)
        cpu_before, threads_before = cpu_seconds(client), driver_threads_cpu()
        with WorkerPeaks(client) as peaks, get_task_stream(client) as stream:
            start, started = time.perf_counter(), time.time()
            report = featurestore.build(catalog, store, client=client, progress=False, **kwargs)
            wall = time.perf_counter() - start
        driver, workers_cpu = (b - a for a, b in zip(cpu_before, cpu_seconds(client)))
        main, others = (b - a for a, b in zip(threads_before, driver_threads_cpu()))
    return {"report": report, "wall_s": wall, "peak_rss_mib": max(peaks.peaks_mib),
            "workers_cpu_s": workers_cpu, "driver_process_cpu_s": driver,
            "driver_main_thread_cpu_s": main, "driver_other_threads_cpu_s": others,
            "task_stream": task_summary(stream.data, started, wall)}


def timed_build(catalog: str, store: str, workers: int, monitoring: bool = False,
                quiet: bool = False, **kwargs):
    """:func:`measured_build`, printing where the time went; returns (report, wall, peak)."""
    m = measured_build(catalog, store, workers, monitoring, **kwargs)
    if not quiet:
        t = m["task_stream"]
        print(f"  ({workers} worker(s): {m['wall_s']:.2f} s wall; CPU: workers "
              f"{m['workers_cpu_s']:.2f} s, driver {m['driver_process_cpu_s']:.2f} s; tasks "
              f"{t['busy_s']:.2f} s; per worker idle {t['idle_per_worker_s']:.2f} s: "
              f"{t['idle_before_first_s']:.2f} s before its first task, "
              f"{t['idle_after_last_s']:.2f} s after its last)")
    return m["report"], m["wall_s"], m["peak_rss_mib"]


def compare_monitoring(catalog: str, out: str, runs: int) -> None:
    """2-worker builds with Dask's default monitoring and with ours (quieter), alternating
    ``runs`` times (this machine's speed drifts); prints every wall time and the medians."""
    walls: dict[str, list[float]] = {"Dask's default monitoring": [], "quiet monitoring": []}
    for _ in range(runs):
        for name, monitoring in zip(walls, (True, False)):
            walls[name].append(timed_build(catalog, os.path.join(out, "store-monitoring"), 2,
                                           monitoring=monitoring, quiet=True)[1])
    for name, w in walls.items():
        print(f"{name:26s} {' '.join(f'{x:.2f}' for x in w)} s; median {np.median(w):.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out"))
    parser.add_argument("--noop-tracks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of the loop, the builds and the plain processes")
    parser.add_argument("--compare-monitoring", type=int, metavar="RUNS", default=0,
                        help="only compare 2-worker builds with Dask's default monitoring and "
                             "with the quieter one, RUNS times each")
    parser.add_argument("--stages", type=int, metavar="FILES", default=0,
                        help="only time each stage of both paths over the first FILES files")
    args = parser.parse_args()
    lib_dir = os.path.join(args.out, "mp3-library")
    t0 = time.perf_counter()
    catalog = make_library(lib_dir, args.minutes)
    with open(catalog) as f:
        paths = [r["path"] for r in csv.DictReader(f)]
    print(f"library: {len(paths)} MP3 files, {args.minutes:.0f} min "
          f"(ready in {time.perf_counter() - t0:.0f} s)")
    if args.stages:
        from featurestore.cluster import WORKER_ENVIRON

        times = together(stage_times, [(paths[:args.stages],)], WORKER_ENVIRON)[0]
        for name, t in times.items():
            print(f"{name:32s} {np.median(t):6.1f} ms per file, median of "
                  f"{' '.join(f'{x:.1f}' for x in t)}")
        return
    if args.compare_monitoring:
        compare_monitoring(catalog, args.out, args.compare_monitoring)
        return

    # This machine's speed drifts by 5-40% between minutes, so each round measures every rate
    # within a minute of the others and the ratios are taken within the round.
    per_core, scaling, ceiling, peaks = [], [], [], []
    for r in range(1, args.rounds + 1):
        audio, wall = librosa_loop(paths)
        loop_rate = audio / wall
        print(f"round {r}: librosa loop (1 process): {loop_rate:7.1f} audio s / wall s "
              f"({audio:.0f} s audio in {wall:.1f} s)")
        rates = {}
        for workers in (1, 2):
            report, wall, peak = timed_build(catalog, os.path.join(args.out, f"store-{workers}"),
                                             workers)
            rates[workers] = report.audio_seconds / wall
            peaks.append(peak)
            print(f"round {r}: featurestore build, {workers} worker(s): "
                  f"{rates[workers] / workers:7.1f} audio s / wall s per core "
                  f"({report.audio_seconds:.0f} s audio in {wall:.2f} s; "
                  f"peak worker RSS {peak:.0f} MiB)")
        plain = {n: plain_processes(paths, n) for n in (1, 2)}
        per_core.append(rates[1] / loop_rate)
        scaling.append(rates[2] / rates[1])
        ceiling.append(plain[2] / plain[1])
        print(f"round {r}: no Dask, 2 plain processes: {plain[2]:7.1f} audio s / wall s "
              f"({plain[1]:.1f} in 1 process)")
        print(f"round {r}: per core, build / librosa loop {per_core[-1]:.2f}x; 2 workers / 1 "
              f"{scaling[-1]:.2f}x; 2 plain processes / 1 {ceiling[-1]:.2f}x")
    print(f"over {args.rounds} rounds (median, range):")
    print(f"  per core, build / librosa loop: {np.median(per_core):.2f}x "
          f"({min(per_core):.2f}-{max(per_core):.2f}; target >= 1.5x)")
    print(f"  2 workers / 1 worker:           {np.median(scaling):.2f}x "
          f"({min(scaling):.2f}-{max(scaling):.2f}; target >= 1.8x)")
    print(f"  ceiling, 2 plain processes / 1: {np.median(ceiling):.2f}x "
          f"({min(ceiling):.2f}-{max(ceiling):.2f}); the build reaches "
          f"{np.median(np.array(scaling) / np.array(ceiling)):.0%} of it")
    print(f"  peak worker RSS: {max(peaks):.0f} MiB (target < 1024)")

    # Memory with a 60-minute track in the library.
    long_path = os.path.join(lib_dir, "long-60min.mp3")
    if not os.path.exists(long_path):
        with sf.SoundFile(long_path + ".part", "w", 44100, 2, format="MP3") as out:
            for k in range(60):
                y = synthesize(FILMS[k % len(FILMS)][3], 60.0, 44100, np.random.default_rng(k))
                out.write(np.stack([y, y], axis=1))
        os.replace(long_path + ".part", long_path)
    with open(catalog) as f:
        rows = list(csv.DictReader(f))
    rows.append({"track_id": "long", "path": long_path, "film": "Long", "year": 2000,
                 "genres": "Drama"})
    mem_catalog = write_catalog(os.path.join(lib_dir, "catalog-with-long.csv"), rows)
    report, wall, peak = timed_build(mem_catalog, os.path.join(args.out, "store-mem"), 2)
    print(f"with a 60-minute MP3: peak worker RSS {peak:.0f} MiB (target < 1024), "
          f"{report.audio_seconds / 3600:.2f} h in {wall:.1f} s")

    # No-op rebuild of a 10,000-track catalog (1 s WAV files, tiles of 10 frames).
    from featurestore.spec import FeatureSpec

    many_dir = os.path.join(args.out, "many")
    os.makedirs(many_dir, exist_ok=True)
    y = (0.1 * np.sin(2 * np.pi * 440 * np.arange(22050) / 22050)).astype(np.float32)
    rows = []
    for i in range(args.noop_tracks):
        p = os.path.join(many_dir, f"m{i:05d}.wav")
        if not os.path.exists(p):
            sf.write(p, y * (1 + i % 7) / 8, 22050, subtype="PCM_16")
        rows.append({"track_id": f"m{i:05d}", "path": p, "genres": "Drama"})
    many = write_catalog(os.path.join(many_dir, "catalog.csv"), rows)
    spec = FeatureSpec(tile_frames=10, tile_hop=10)
    report, wall, _ = timed_build(many, os.path.join(args.out, "store-many"), 2, spec=spec,
                                  batch_seconds=200.0)
    print(f"first build of {args.noop_tracks} tracks: {wall:.1f} s, {report.built} extracted")
    import featurestore
    store = os.path.join(args.out, "store-many")
    start = time.perf_counter()
    again = featurestore.build(many, store, spec=spec, progress=False)
    noop = time.perf_counter() - start
    print(f"rebuild with nothing to do, {args.noop_tracks} tracks: {noop:.2f} s "
          f"({again.unchanged} skipped, {again.built} extracted; target < 10 s)")


if __name__ == "__main__":
    main()
