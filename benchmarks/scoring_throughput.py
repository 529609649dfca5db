"""Batch scoring throughput with the ensemble on this machine (run by hand).

    python benchmarks/scoring_throughput.py [--tracks 1000] [--copies 1] [--seconds 20 45]
        [--device auto] [--dir benchmarks/out/scoring]

Generates the demo library with ``--tracks`` cues of ``--seconds`` (min, max) each, and with
``--copies K`` a catalog naming each cue K times under new names (links to the same file: a
large library at no synthesis cost), builds it, trains the 10-member ensemble for one epoch on
the device (the weights do not change the cost), then measures:

With ``--synthetic-tracks N --tiles-per-track T`` the library is N tracks whose extraction is
replaced by random tiles (``featurestore.build``'s ``extractor``): a store of any size in
seconds, for measuring scoring at scale (its cost does not depend on the tiles' values).

- the model alone: tiles/s of one process on one thread, as scoring runs it (channels-last,
  batches of 16 on a CPU), no I/O;
- the obvious alternative: one process scoring track by track (its tiles read through
  ``store.tiles``, one forward pass a track), no Dask, nothing written;
- ``score --rescore`` on a LocalCluster of 1 and of 2 single-threaded worker processes, end to
  end (tiles read from Zarr, scores written, the run committed);
- the model alone in 1 and in 2 plain processes started together (no Dask, no driver): what
  2 cores allow 2 workers at most;

and from the 2-worker rate the hours of wall time to score a 100-hour and a 10,000-hour
catalog (387.6 tiles an hour of audio at the study's spec). On a machine with CUDA, the same
runs use the GPU (``--device``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time

import numpy as np
import pandas as pd
import torch
from measuring import cpu_seconds, together

import featurestore
from catalogs.demo import FILMS, generate_demo_library
from featurestore.extract import TrackResult, extract_track
from featurestore.cluster import connect
from scoring import score
from scoring.score_tasks import ready_to_score, score_tiles
from training import TrainConfig, train
from training.inference import resolve_device
from training.model_files import ModelFiles

MODEL = "bench-ensemble"


def with_copies(catalog: str, copies: int) -> str:
    """A catalog naming every cue of ``catalog`` ``copies`` times, each copy a link of its own
    name to the same audio (extracted and scored as a track of its own)."""
    base = pd.read_csv(catalog)
    root = os.path.dirname(os.path.abspath(catalog))
    frames = [base]
    for c in range(1, copies):
        copy = base.assign(track_id=base["track_id"] + f"-c{c}",
                           path=base["path"].map(lambda p: f"{os.path.dirname(p)}/c{c}-"
                                                           f"{os.path.basename(p)}"))
        for src, dst in zip(base["path"], copy["path"]):
            if not os.path.lexists(os.path.join(root, dst)):
                os.symlink(os.path.join(root, src), os.path.join(root, dst))
        frames.append(copy)
    out = os.path.join(root, f"catalog-x{copies}.csv")
    pd.concat(frames).to_csv(out, index=False)
    return out


def synthetic_track(path: str, spec, storage_options=None, known_hash=None) -> TrackResult:
    """Stand-in extraction: the tile count named in the file name (``s00001-40.wav``), random
    tiles seeded by the name."""
    n = int(os.path.basename(path).split("-")[1].split(".")[0])
    seed = int(hashlib.sha1(path.encode()).hexdigest()[:8], 16)
    tiles = np.random.default_rng(seed).standard_normal((n, *spec.tile_shape),
                                                       dtype=np.float32) * 20
    return TrackResult("ok", "", tiles, f"synthetic-{seed}", n * spec.tile_seconds, 22050, 1)


def synthetic_catalog(directory: str, n_tracks: int, tiles: int) -> str:
    """N placeholder files (the build stats them) and a catalog of them, genres as the demo's."""
    audio = os.path.join(directory, "synthetic")
    os.makedirs(audio, exist_ok=True)
    rows = []
    for i in range(n_tracks):
        film, composer, year, genres = FILMS[i % len(FILMS)]
        name = f"s{i:06d}-{tiles}.wav"
        open(os.path.join(audio, name), "a").close()
        rows.append({"track_id": f"s{i:06d}", "path": f"synthetic/{name}", "title": name,
                     "film": film, "composer": composer, "year": year,
                     "genres": "|".join(genres)})
    out = os.path.join(directory, f"synthetic-{n_tracks}x{tiles}.csv")
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def prepare(directory: str, n_tracks: int, copies: int = 1,
            seconds: tuple[float, float] = (20.0, 45.0), device: str = "cpu",
            synthetic_tiles: int = 0) -> str:
    url = os.path.join(directory, "store")
    if synthetic_tiles:
        catalog, extractor = synthetic_catalog(directory, n_tracks, synthetic_tiles), \
            synthetic_track
    else:
        catalog = generate_demo_library(directory, n_tracks=n_tracks, min_seconds=seconds[0],
                                        max_seconds=seconds[1])
        catalog, extractor = with_copies(catalog, copies) if copies > 1 else catalog, \
            extract_track
    with connect() as client:  # a worker per core
        print(featurestore.build(catalog, url, name="demo", client=client, progress=False,
                                 extractor=extractor).summary(), flush=True)
    files = ModelFiles(featurestore.open(url), MODEL)
    if not files.exists():
        train(url, MODEL, TrainConfig(arch="ensemble", epochs=1, optimizer="adam",
                                      learning_rate=1e-3, min_tracks=6, test_size=0.1,
                                      device=device), progress=False)
    return url


def model_only(url: str, device: torch.device, n: int = 2048) -> float:
    store = featurestore.open(url)
    model = ready_to_score(ModelFiles(store, MODEL).load_model(), device)  # as score runs it
    tiles = store.tiles().values[:n].astype(np.float32)
    score_tiles(model, tiles[:512], False, device)  # warm up
    start = time.perf_counter()
    score_tiles(model, tiles, False, device)
    return len(tiles) / (time.perf_counter() - start)


def _score_share(url: str, share: int, of: int, n: int,
                 batch_size: int | None = None) -> tuple[int, float]:
    """(tiles, wall seconds) of scoring every ``of``-th of the first ``n`` tiles, from
    ``share``, on one thread of this process, with no Dask and nothing written."""
    torch.set_num_threads(1)
    store = featurestore.open(url)
    model = ready_to_score(ModelFiles(store, MODEL).load_model(), torch.device("cpu"))
    tiles = store.tiles().values[:n].astype(np.float32)[share::of]
    score_tiles(model, tiles[:64], False, torch.device("cpu"), batch_size)  # warm up
    start = time.perf_counter()
    score_tiles(model, tiles, False, torch.device("cpu"), batch_size)
    return len(tiles), time.perf_counter() - start


def plain_processes(url: str, n_procs: int, n: int = 2048, batch_size: int | None = None) -> float:
    """Tiles/s of ``n_procs`` plain processes (no Dask, no driver) scoring ``n`` tiles split
    between them, started together: the ceiling for ``n_procs`` CPU workers here."""
    results = together(_score_share, [(url, share, n_procs, n, batch_size)
                                      for share in range(n_procs)])
    return sum(t for t, _ in results) / max(w for _, w in results)


def compare_batch_sizes(url: str, sizes: list[int], repeats: int) -> None:
    """Tiles/s of the model alone in 1 and in 2 plain processes for each batch size, the sizes
    alternating ``repeats`` times (this machine's speed drifts), then the means."""
    runs: dict[int, list[tuple[float, float]]] = {b: [] for b in sizes}
    for _ in range(repeats):
        for b in sizes:
            runs[b].append((plain_processes(url, 1, 3200, b), plain_processes(url, 2, 3200, b)))
            print(f"batch {b}: 1 process {runs[b][-1][0]:.0f}, 2 processes {runs[b][-1][1]:.0f} "
                  "tiles/s", flush=True)
    for b, r in runs.items():
        one, two = np.mean(r, axis=0)
        print(f"batch {b}: means 1 process {one:.0f}, 2 processes {two:.0f} tiles/s "
              f"({two / one:.2f}x)")


def track_by_track(url: str, device: torch.device, limit: int = 200) -> float:
    store = featurestore.open(url)
    model = ModelFiles(store, MODEL).load_model().to(device)  # as a plain script would
    tracks = store.tracks(status="ok").head(limit)
    start, n = time.perf_counter(), 0
    for i in range(len(tracks)):
        tiles = store.tiles(tracks.iloc[i:i + 1]).values.astype(np.float32)
        with torch.inference_mode():
            model(torch.from_numpy(tiles)[:, None].to(device)).sigmoid().cpu().numpy()
        n += len(tiles)
    return n / (time.perf_counter() - start)


def dask_run(url: str, workers: int, device: str, repeats: int) -> tuple[float, float, int]:
    """Best of ``repeats`` rescoring runs on a warm cluster: (tiles/s, tracks/s, tiles); prints
    each run's wall time, the seconds its tasks took, and the rest (planning, commit)."""
    best = None
    with connect(n_workers=workers) as client:
        score(url, MODEL, client=client, rescore=True, device=device, progress=False,
              log=lambda msg: None)  # warm
        for _ in range(repeats):
            before = cpu_seconds(client)
            report = score(url, MODEL, client=client, rescore=True, device=device,
                           progress=False, log=lambda msg: None)
            driver, workers_cpu = (b - a for a, b in zip(before, cpu_seconds(client)))
            print(f"{workers} worker(s): {report.seconds:.2f} s wall, tasks "
                  f"{report.task_seconds:.2f} s, {report.scored} tracks; CPU: workers "
                  f"{workers_cpu:.2f} s, driver {driver:.2f} s")
            if best is None or report.seconds < best.seconds:
                best = report
    return best.tiles / best.seconds, best.scored / best.seconds, best.tiles


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=1000)
    parser.add_argument("--copies", type=int, default=1, help="times each cue is in the catalog")
    parser.add_argument("--synthetic-tracks", type=int, default=0, metavar="N",
                        help="a library of N tracks of random tiles instead of audio")
    parser.add_argument("--tiles-per-track", type=int, default=40)
    parser.add_argument("--seconds", type=float, nargs=2, default=[20.0, 45.0],
                        metavar=("MIN", "MAX"), help="length of the generated cues")
    parser.add_argument("--dir", default="benchmarks/out/scoring")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-batch", type=int, nargs="*", default=[],
                        help="only compare these CPU batch sizes, in 1 and 2 plain processes")
    args = parser.parse_args()
    synthetic = args.tiles_per_track if args.synthetic_tracks else 0
    url = prepare(args.dir, args.synthetic_tracks or args.tracks, args.copies,
                  tuple(args.seconds), args.device, synthetic)
    if args.compare_batch:
        compare_batch_sizes(url, args.compare_batch, args.repeats)
        return
    device = resolve_device(args.device)
    torch.set_num_threads(1)  # one core, as one Dask worker has

    alone = model_only(url, device)
    plain = ({k: plain_processes(url, k) for k in (1, 2)} if device.type == "cpu" else None)
    naive = track_by_track(url, device)
    one, one_tracks, tiles = dask_run(url, 1, args.device, args.repeats)
    two, two_tracks, _ = dask_run(url, 2, args.device, args.repeats)
    per_hour = 3600 / featurestore.FeatureSpec().tile_seconds
    listed = args.synthetic_tracks or args.tracks * args.copies
    print(f"\n{listed} tracks, {tiles} tiles, ensemble of 10 members on {device}")
    print(f"model alone, 1 thread:            {alone:8.0f} tiles/s")
    print(f"track by track, 1 process:        {naive:8.0f} tiles/s")
    print(f"score, 1 worker:                  {one:8.0f} tiles/s  {one_tracks:6.1f} tracks/s  "
          f"({one / naive:.1f}x track by track)")
    print(f"score, 2 workers:                 {two:8.0f} tiles/s  {two_tracks:6.1f} tracks/s  "
          f"({two / one:.2f}x 1 worker)")
    if plain:
        print(f"model alone in 1 / 2 plain processes (no Dask): {plain[1]:.0f} / {plain[2]:.0f} "
              f"tiles/s: the ceiling for 2 workers here is {plain[2] / plain[1]:.2f}x; "
              f"score's {two / one:.2f}x is {two / one / (plain[2] / plain[1]):.0%} of it")
    for hours in (100, 10_000):
        print(f"{hours:>6} h catalog ({hours * per_hour:,.0f} tiles): "
              f"{hours * per_hour / two / 3600:.2f} h on 2 workers, "
              f"{hours * per_hour / one / 3600:.2f} h per core")


if __name__ == "__main__":
    main()
