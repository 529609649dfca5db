"""Load: a library of many short tracks built and scored on 2 workers, with peak memory per
worker, at two library sizes (run by hand).

    python benchmarks/load.py [--sizes 500 2000] [--seconds 12] [--dir benchmarks/out/load]

For each size, in a fresh child process (so the driver's peak is its own): write ``N`` tracks of
``--seconds`` of synthetic audio (one tile each at the study's spec) with a catalog, build them
on a fresh LocalCluster of 2 single-threaded worker processes, train a small CNN for one epoch,
and score every track on a fresh 2-worker cluster. It prints wall times, the peak resident
memory of each worker (sampled every 50 ms) and of the driver (``ru_maxrss``), and the checks
that nothing was lost or doubled: every track ``ok`` with its tiles, each tile slot used once,
every track scored with every label ranked once. Memory is bounded when the peaks do not grow
with ``N``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import soundfile as sf
from measuring import WorkerPeaks

from catalogs.writer import write_catalog

GENRES = ["Action", "Comedy", "Drama", "Romance", "Sci-Fi", "Thriller"]


def write_library(directory: str, n: int, seconds: float, sr: int = 22050) -> str:
    """``n`` short tones with noise, each labelled with two genres; returns the catalog."""
    os.makedirs(os.path.join(directory, "audio"), exist_ok=True)
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    rows = []
    for i in range(n):
        f0 = rng.uniform(80, 800)
        y = 0.3 * np.sin(2 * np.pi * f0 * t) + 0.05 * rng.standard_normal(len(t))
        rel = f"audio/t{i:05d}.wav"
        sf.write(os.path.join(directory, rel), y.astype(np.float32), sr, subtype="PCM_16")
        g = rng.choice(len(GENRES), 2, replace=False)
        rows.append({"track_id": f"t{i:05d}", "path": rel, "title": f"Cue {i}",
                     "film": f"Film {i % 97}", "year": 1950 + i % 70,
                     "genres": "|".join(GENRES[k] for k in g)})
    return write_catalog(os.path.join(directory, "catalog.csv"), rows)


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def one_size(n: int, seconds: float, directory: str) -> dict:
    import featurestore
    from featurestore.cluster import connect
    from scoring.score_tables import KEY, score_table, scores
    from scoring import score
    from training import TrainConfig, train

    shutil.rmtree(directory, ignore_errors=True)
    catalog = write_library(os.path.join(directory, "lib"), n, seconds)
    url = os.path.join(directory, "store")
    out: dict = {"tracks": n, "audio_h": round(n * seconds / 3600, 2)}

    with connect(n_workers=2) as client, WorkerPeaks(client) as peaks:
        start = time.perf_counter()
        report = featurestore.build(catalog, url, client=client, progress=False)
        out["build_s"] = round(time.perf_counter() - start, 1)
    out["build_worker_peak_mib"] = peaks.peaks_mib
    out["build_exit"] = report.exit_code

    train(url, "load-cnn", TrainConfig(arch="cnn", epochs=1, min_tracks=5, device="cpu"),
          progress=False)

    with connect(n_workers=2) as client, WorkerPeaks(client) as peaks:
        start = time.perf_counter()
        scored = score(url, "load-cnn", client=client, progress=False)
        out["score_s"] = round(time.perf_counter() - start, 1)
    out["score_worker_peak_mib"] = peaks.peaks_mib
    out["driver_peak_mib"] = round(_peak_mib())

    store = featurestore.open(url)
    tracks = store.tracks()
    starts = tracks["tile_start"].to_numpy()
    frame = scores(store, "load-cnn", columns=[*KEY, "label", "rank"])
    ranks = frame.groupby(KEY)["rank"].agg(["count", "max", "nunique"])
    n_labels = len(score_table(store, "load-cnn").info().classes)
    out["checks"] = {
        "tracks_ok": int((tracks["status"] == "ok").sum()),
        "tiles": int(tracks["n_tiles"].sum()),
        "tile_slots_unique": bool(len(np.unique(starts)) == len(starts)),
        "tracks_scored": int(scored.scored),
        "tracks_with_scores": len(ranks),
        "every_label_ranked_once": bool(((ranks["count"] == n_labels)
                                         & (ranks["nunique"] == n_labels)).all()),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--dir", default=os.path.join(os.path.dirname(__file__), "out", "load"))
    parser.add_argument("--only", type=int, help=argparse.SUPPRESS)  # the child's size
    args = parser.parse_args()
    if args.only:
        result = one_size(args.only, args.seconds, os.path.join(args.dir, str(args.only)))
        print("RESULT " + json.dumps(result))
        return
    results = []
    for n in args.sizes:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--only", str(n), "--seconds",
                               str(args.seconds), "--dir", args.dir],
                              capture_output=True, text=True)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode or line is None:
            sys.exit(f"size {n} failed:\n{proc.stdout}\n{proc.stderr}")
        results.append(json.loads(line[7:]))
        print(f"{n} tracks done in {time.perf_counter() - started:.0f} s: {results[-1]}",
              flush=True)
    print("\n| tracks | audio h | build s | build peak per worker MiB | score s | "
          "score peak per worker MiB | driver peak MiB | lost or doubled |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        c = r["checks"]
        whole = (c["tracks_ok"] == c["tracks_with_scores"] == c["tracks_scored"] == r["tracks"]
                 and c["tile_slots_unique"] and c["every_label_ranked_once"])
        print(f"| {r['tracks']} | {r['audio_h']} | {r['build_s']} | "
              f"{' / '.join(map(str, r['build_worker_peak_mib']))} | {r['score_s']} | "
              f"{' / '.join(map(str, r['score_worker_peak_mib']))} | {r['driver_peak_mib']} | "
              f"{'nothing' if whole else 'SEE CHECKS: ' + json.dumps(c)} |")


if __name__ == "__main__":
    main()
