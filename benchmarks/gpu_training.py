"""Ensemble training throughput, fused against member by member, and the study's schedule
projected from it (run by hand; runs on the CPU with small sizes, on a GPU at the study's).

    python benchmarks/gpu_training.py [--tiles 130000] [--classes 10] [--device auto]
        [--batch-sizes 128 1024] [--steps 20] [--loader-tiles N] [--grouped] [--compile]
        [--json PATH]
        [--dir benchmarks/out/gpu-training]

Writes ``--tiles`` random (40, 100) float32 tiles straight into Zarr tile arrays laid out as a
store's (256 tiles a chunk, zstd), in tracks of 4 tiles, each track carrying one of
``--classes`` labels at random (the study: 130,000 tiles, 10 classes, ~13,000 positives each).
Then prints:

- loader tiles/s: every tile read into memory once (as ``train`` preloads them), chunk groups
  one at a time and :data:`~featurestore.tile_arrays.READ_THREADS` at once; one epoch through
  the block-shuffle loader (when tiles do not fit) with 0 and 2 DataLoader workers, reading one
  chunk group at a time and several (the first ``--loader-tiles``); and on CUDA the same
  loader feeding the GPU through :func:`training.device_feed.to_device` (pinned memory, copies
  on a side stream);
- for each of ``--batch-sizes``: member-tiles/s of the ensemble trained member by member as
  ``training.loop.fit`` trains them (each member's balanced epoch from the in-memory loader,
  ``torch.optim`` SGD), and of the fused ensemble (``training.fused.FusedTrainer``: every
  member's own batch in the same step, gathered from one tile tensor on the device),
  ``--steps`` steps each, both under the heap settings ``train`` runs under
  (:func:`training.heap.heap_reuse`), with the GPU's utilization during the fused steps
  (CUDA only); at the largest batch also with the tiles kept as bfloat16 and, with
  ``--compile``, compiled (``torch.compile``; its compile seconds printed apart).
  ``--grouped`` runs the fused steps as one grouped pass on a CPU too (the GPU's way; a CPU's
  default is each member's own convolutions, in a thread per core);
- the study's schedule (655 epochs, each member all its positives and as many negatives)
  in member-tile steps and the hours it takes at each rate.

``--json PATH`` also writes every figure to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import torch

from featurestore.tile_arrays import READ_THREADS, TileSource, read_tiles
from training.config import GPU_BATCH, TrainConfig
from training.device_feed import to_device
from training.fused import FusedEnsemble, FusedTrainer
from training.heap import heap_reuse
from training.inference import place, resolve_device
from training.memory_budget import device_dtype
from training.loader import BlockShuffleTiles, make_loader
from training.loop import make_loss, make_optimizer, train_step
from training.models import build_model
from training.samplers import OneVsRestSampler, TileTable

from loader_throughput import loader_rate, make_tiles  # a sibling script in benchmarks/

STUDY_EPOCHS = 655  # the study's best model
TRACK_TILES = 4




def labels(n: int, classes: int) -> TileTable:
    """Tracks of :data:`TRACK_TILES` tiles, each with one class drawn at random."""
    tracks = -(-n // TRACK_TILES)
    targets = np.zeros((tracks, classes), dtype=np.float32)
    targets[np.arange(tracks), np.random.default_rng(1).integers(0, classes, tracks)] = 1
    return TileTable(np.arange(n), np.arange(n) // TRACK_TILES, targets)


def loader_rates(url: str, n: int, device: torch.device) -> dict[str, float]:
    source = TileSource(url)
    rates = {}
    for threads in (1, READ_THREADS):
        start = time.perf_counter()
        read_tiles(source, np.arange(n), threads)
        rates[f"read into memory, {threads} read thread(s)"] = n / (time.perf_counter() - start)
    feeds = [(w, t, False) for w in (0, 2) for t in (1, READ_THREADS)]
    if device.type == "cuda":
        feeds += [(w, READ_THREADS, True) for w in (0, 2)]
    for workers, threads, feed in feeds:
        name = (f"block-shuffle, {workers} workers, {threads} read thread(s)"
                + (", onto the GPU" if feed else ""))
        rates[name] = loader_rate(url, n, workers, threads, device if feed else None)
    return rates


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _forever(data: BlockShuffleTiles):
    while True:  # epochs of the same plan, for as many steps as asked
        yield from make_loader(data, 0)


def sequential_rate(url: str, tiles: np.ndarray, table: TileTable, config: TrainConfig,
                    device: torch.device, steps: int) -> float:
    """Member-tiles/s of ``steps`` steps of each member in turn, as ``fit`` runs them."""
    model = build_model("ensemble", tiles.shape[1:], table.targets.shape[1])
    data = BlockShuffleTiles(TileSource(url), config.batch_size, shuffle=True)
    data.memory = (np.arange(len(tiles)), tiles)
    seen, seconds = 0, 0.0
    for k, net in enumerate(model.members):
        place(net, device).train()
        opt, _ = make_optimizer(net, config)
        loss_fn = make_loss(False, None).to(device)
        data.set_plan(*OneVsRestSampler(table, k, "equal", k).epoch(0))
        batches = to_device(_forever(data), device)
        for i in range(steps + 1):  # the first step warms up
            if i == 1:
                _sync(device)
                started = time.perf_counter()
            x, y = next(batches)
            train_step(net, x, y, loss_fn, opt, device, config.mixed_precision)
            seen += len(x) * (i > 0)
        _sync(device)
        seconds += time.perf_counter() - started
    return seen / seconds


class Utilization:
    """Mean GPU utilization (nvidia-smi, sampled every 0.2 s) while the block runs."""

    def __init__(self, device: torch.device):
        self.enabled = device.type == "cuda" and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu",
                                  "--format=csv,noheader,nounits"], capture_output=True,
                                 text=True)
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))

    def __enter__(self) -> Utilization:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def summary(self) -> str:
        return f"{np.mean(self.samples):.0f}%" if self.samples else "n/a"


def fused_rate(tiles: np.ndarray, table: TileTable, config: TrainConfig, device: torch.device,
               steps: int, grouped: bool | None = None) -> dict:
    """Member-tiles/s of ``steps`` fused steps, every member its own batch of its epoch, the
    GPU's utilization meanwhile, and the seconds of the first (warm-up, compiling) step."""
    n_members = table.targets.shape[1]
    model = build_model("ensemble", tiles.shape[1:], n_members)
    fused = FusedEnsemble(list(model.members)).to(device)
    on_device = torch.from_numpy(tiles).to(device, device_dtype(config, device))
    trainer = FusedTrainer(fused, on_device, config, grouped=grouped)
    batch = config.batch_size
    plans = [OneVsRestSampler(table, k, "equal", k).epoch(0) for k in range(n_members)]
    rng = np.random.default_rng(0)
    pos = np.stack([np.resize(rng.permutation(index), batch * (steps + 1)) for index, _ in plans])
    y = rng.integers(0, 2, pos.shape).astype(np.float32)
    pos_d, y_d = torch.from_numpy(pos).to(device), torch.from_numpy(y).to(device)
    w = torch.full((n_members, batch), 1 / batch, device=device)
    rows = list(range(n_members))
    began = time.perf_counter()
    with trainer.workers() as pool, Utilization(device) as busy:
        for i in range(steps + 1):  # the first step warms up
            if i == 1:
                _sync(device)
                started = time.perf_counter()
                warm_up = started - began
                busy.samples.clear()  # the timed steps' utilization, not the compilation's
            cols = slice(i * batch, (i + 1) * batch)
            trainer.step(rows, pos_d[:, cols], y_d[:, cols], w, [batch] * n_members,
                         config.learning_rate, pool)
        _sync(device)
        seconds = time.perf_counter() - started
    return {"member_tiles_per_s": steps * batch * n_members / seconds,
            "gpu_utilization": busy.summary(), "warm_up_s": warm_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=130_000)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, GPU_BATCH])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per way")
    parser.add_argument("--loader-tiles", type=int, help="tiles the loader reads (default all)")
    parser.add_argument("--grouped", action="store_true",
                        help="fused steps as one grouped pass on a CPU too")
    parser.add_argument("--compile", action="store_true",
                        help="also time the fused steps compiled (torch.compile)")
    parser.add_argument("--json", metavar="PATH", help="write the figures to this JSON file")
    parser.add_argument("--dir", default=os.path.join("benchmarks", "out", "gpu-training"))
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    device = resolve_device(args.device)
    url = os.path.abspath(os.path.join(args.dir, f"tiles-{args.tiles}.zarr"))
    figures: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
                     else f"cpu, {torch.get_num_threads()} threads", "tiles": args.tiles,
                     "classes": args.classes, "steps": args.steps}

    def save() -> None:  # after every stage: a later failure keeps what was measured
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)

    started = time.perf_counter()
    make_tiles(url, args.tiles)
    table = labels(args.tiles, args.classes)
    positives = table.labels.sum(0)
    print(f"{args.tiles} tiles ({args.tiles * 16000 / 2**20:.0f} MiB as float32), "
          f"{args.classes} classes ({positives.min():.0f}-{positives.max():.0f} positive "
          f"tiles each) at {url} ({time.perf_counter() - started:.1f} s)", flush=True)
    figures["loader_tiles_per_s"] = loader_rates(url, min(args.loader_tiles or args.tiles,
                                                          args.tiles), device)
    for name, rate in figures["loader_tiles_per_s"].items():
        print(f"loader, {name}: {rate:,.0f} tiles/s", flush=True)
    save()

    tiles = read_tiles(TileSource(url), np.arange(args.tiles))
    grouped = args.grouped or None
    runs = figures["training"] = []
    with heap_reuse():  # the heap settings train() runs under
        for batch in args.batch_sizes:
            config = TrainConfig(arch="ensemble", batch_size=batch, device=str(device)).resolved()
            ways = [("fused", config)]
            if batch == max(args.batch_sizes):
                ways.append(("fused, bfloat16 tiles", TrainConfig(
                    arch="ensemble", batch_size=batch, device=str(device),
                    tile_dtype="bfloat16").resolved()))
                if args.compile:
                    ways.append(("fused, compiled", TrainConfig(
                        arch="ensemble", batch_size=batch, device=str(device),
                        compile=True).resolved()))
            sequential = sequential_rate(url, tiles, table, config, device, args.steps)
            print(f"on {device}, batch {batch}, {args.steps} steps:")
            print(f"  members one after another: {sequential:,.0f} member-tiles/s", flush=True)
            runs.append({"batch": batch, "way": "members one after another",
                         "member_tiles_per_s": sequential})
            save()
            for way, cfg in ways:
                try:
                    got = fused_rate(tiles, table, cfg, device, args.steps, grouped)
                except Exception as exc:  # noqa: BLE001 - an option that fails here is a finding
                    print(f"  {way}: failed: {type(exc).__name__}: {exc}", flush=True)
                    runs.append({"batch": batch, "way": way, "error": repr(exc)})
                    continue
                rate = got["member_tiles_per_s"]
                print(f"  {way + ':':26s} {rate:,.0f} member-tiles/s ({rate / sequential:.2f}x), "
                      f"GPU utilization {got['gpu_utilization']}, first step "
                      f"{got['warm_up_s']:.1f} s", flush=True)
                runs.append({"batch": batch, "way": way, **got})
                save()
    per_epoch = 2 * np.minimum(positives, len(table) - positives).sum()
    total = STUDY_EPOCHS * per_epoch
    print(f"the study's schedule: {STUDY_EPOCHS} epochs x {per_epoch:,.0f} member-tiles = "
          f"{total / 1e6:,.1f} million member-tile steps:")
    for run in runs:
        if "member_tiles_per_s" in run:
            hours = total / run["member_tiles_per_s"] / 3600
            run["study_schedule_h"] = float(hours)
            print(f"  batch {run['batch']}, {run['way']}: {hours:.2f} h ({hours * 60:.1f} min)")
    figures["study_member_tile_steps"] = int(total)
    save()


if __name__ == "__main__":
    main()
