"""Tile loader throughput against the model's own training throughput (run by hand).

    python benchmarks/loader_throughput.py [--tiles 40000] [--out benchmarks/out/loader-tiles]
    python benchmarks/loader_throughput.py --compare-zarr [--repeats 3]

Writes ``--tiles`` random (40, 100) float32 tiles into Zarr tile arrays laid out as a store's
(256 tiles a chunk, zstd), larger than the loader's memory budget so the block-shuffle path runs,
then prints tiles/s for: one epoch through ``BlockShuffleTiles`` with 0 and 2 DataLoader workers,
each reading one chunk group at a time and :data:`~featurestore.tile_arrays.READ_THREADS` at
once (``--repeats`` rounds, alternating, as this machine's speed drifts);
random single-tile reads (the obvious alternative); and forward + backward of the ``cnn`` and an
ensemble member on this machine's CPU (or GPU when present), batch 128. Target: the loader
keeps up with training, and reaches 20,000 tiles/s with 2 workers.

``--compare-zarr`` instead times, in alternating rounds, every tile read into memory
(``read_tiles``, as training preloads) and one epoch of the default loader (0 workers,
``READ_THREADS``) with the chunk files decoded by the reading threads
(:func:`~featurestore.tile_arrays.read_range`) and with Zarr's own reads, the obvious
alternative, and prints both and their ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time

import numpy as np
import torch

from featurestore.spec import FeatureSpec, TileEncoding
from featurestore import tile_arrays
from featurestore.tile_arrays import READ_THREADS, TileArrays, TileSource, read_tiles
from training.device_feed import to_device
from training.loader import BlockShuffleTiles, make_loader
from training.inference import place, resolve_device
from training.models import build_model, member


def make_tiles(url: str, n: int) -> None:
    if os.path.exists(os.path.join(url, "mfcc")):
        return
    arrays = TileArrays.create(url, FeatureSpec(), TileEncoding())
    arrays.ensure_capacity(n)
    rng = np.random.default_rng(0)
    step = 256 * 16
    for start in range(0, n, step):
        count = min(step, n - start)
        tiles = rng.standard_normal((count, 40, 100), dtype=np.float32) * 20
        arrays.write_region(start, tiles, np.full(count, start, np.int64),
                            np.arange(count, dtype=np.int32))


def loader_rate(url: str, n: int, workers: int, threads: int = READ_THREADS,
                onto: torch.device | None = None) -> float:
    """Tiles/s of one epoch over the first ``n`` tiles through the block-shuffle loader, with
    ``workers`` DataLoader workers and ``threads`` chunk reads in flight; with ``onto`` (a CUDA
    device) the batches also go there through :func:`training.device_feed.to_device`."""
    data = BlockShuffleTiles(TileSource(url), batch_size=128, read_threads=threads)
    data.set_plan(np.arange(n), np.zeros(n, dtype=np.float32), epoch=0)
    start, seen = time.perf_counter(), 0
    batches = make_loader(data, workers)
    for x, _ in (to_device(batches, onto) if onto is not None else batches):
        seen += len(x)
    if onto is not None:
        torch.cuda.synchronize(onto)
    assert seen == n
    return seen / (time.perf_counter() - start)


def random_reads(url: str, n: int, count: int = 500) -> float:
    array = TileSource(url).array()
    picks = np.random.default_rng(1).integers(0, n, count)
    start = time.perf_counter()
    for i in picks:
        np.asarray(array[int(i)])
    return count / (time.perf_counter() - start)


def training_rate(model: torch.nn.Module, device: torch.device, steps: int = 20) -> float:
    place(model, device).train()  # the layout the training loop uses
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = place(torch.randn(128, 1, 40, 100), device)
    y = torch.rand(128, model(x[:1]).shape[1], device=device).round()
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for i in range(steps + 3):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * 128 / (time.perf_counter() - start)


@contextlib.contextmanager
def zarr_reads():
    """Every tile read through Zarr's own indexing (the chunk-file decoding switched off)."""
    saved = tile_arrays._blosc_chunks
    tile_arrays._blosc_chunks = lambda array: None
    try:
        yield
    finally:
        tile_arrays._blosc_chunks = saved


def compare_zarr(url: str, n: int, repeats: int) -> None:
    ways = {"chunk files": contextlib.nullcontext, "Zarr's reads": zarr_reads}
    runs = {(way, what): [] for way in ways for what in ("read into memory", "loader")}
    for _ in range(repeats):
        for way, reads in ways.items():
            with reads():
                start = time.perf_counter()
                read_tiles(TileSource(url), np.arange(n))
                runs[way, "read into memory"].append(n / (time.perf_counter() - start))
                runs[way, "loader"].append(loader_rate(url, n, 0, READ_THREADS))
    for what in ("read into memory", "loader"):
        mine, theirs = (np.mean(runs[way, what]) for way in ways)
        for way in ways:
            got = runs[way, what]
            print(f"{what}, {way}: {np.mean(got):9.0f} tiles/s (runs: "
                  f"{', '.join(f'{r:.0f}' for r in got)})")
        print(f"  {what}: chunk files / Zarr's reads {mine / theirs:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=40_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=os.path.join("benchmarks", "out", "loader-tiles"))
    parser.add_argument("--compare-zarr", action="store_true",
                        help="chunk-file decoding against Zarr's own reads, nothing else")
    args = parser.parse_args()
    url = os.path.abspath(f"{args.out}-{args.tiles}.zarr")
    start = time.perf_counter()
    make_tiles(url, args.tiles)
    print(f"{args.tiles} tiles ({args.tiles * 16000 / 2**20:.0f} MiB as float32) at {url} "
          f"({time.perf_counter() - start:.1f} s)")
    if args.compare_zarr:
        compare_zarr(url, args.tiles, args.repeats)
        return
    device = resolve_device("auto")
    runs: dict[tuple[int, int], list[float]] = {(w, t): [] for w in (0, 2)
                                                for t in (1, READ_THREADS)}
    for _ in range(args.repeats):
        for (workers, threads), got in runs.items():
            got.append(loader_rate(url, args.tiles, workers, threads))
    for (workers, threads), got in runs.items():
        print(f"block-shuffle loader, {workers} workers, {threads} read thread(s): "
              f"{np.mean(got):9.0f} tiles/s (runs: {', '.join(f'{r:.0f}' for r in got)})")
    for workers in (0, 2):
        print(f"  {workers} workers: {READ_THREADS} read threads / 1: "
              f"{np.mean(runs[workers, READ_THREADS]) / np.mean(runs[workers, 1]):.2f}x")
    rates = {w: np.mean(runs[w, READ_THREADS]) for w in (0, 2)}
    single = random_reads(url, args.tiles)
    cnn = training_rate(build_model("cnn", (40, 100), 10), device)
    one = training_rate(member((40, 100)), device)
    print(f"random single-tile reads:        {single:9.0f} tiles/s  -> loader (2 workers) is "
          f"{rates[2] / single:.0f}x faster")
    print(f"training on {device}, cnn:         {cnn:9.0f} tiles/s  -> loader / training "
          f"{rates[2] / cnn:.1f}x")
    print(f"training on {device}, ensemble member: {one:5.0f} tiles/s  -> loader / training "
          f"{rates[2] / one:.1f}x")


if __name__ == "__main__":
    main()
