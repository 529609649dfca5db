"""Simulated extraction for the build at scale: workers that take a real batch's measured time.

:class:`MeasuredTimeExtraction` stands in for ``featurestore.extract.extract_track`` through the
build's ``extractor=`` parameter: it sleeps the measured extraction time of the track's audio
and returns real tiles (those of a real cue, repeated to the track's length), so everything
else (planning, the scheduler, the writes, the commits, the statistics) runs as in a real build.
The tracks are sparse files of the size the planner expects of their audio.

``python benchmarks/simulated_work.py SCHEDULER_FILE N`` hosts N single-threaded Dask workers in
one process (the simulated work is sleeps, so one process holds many workers).
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from featurestore.extract import TrackResult, extract_track
from featurestore.planning import estimate_seconds
from featurestore.spec import FeatureSpec

#: Bytes per second of the sparse stand-in files (the planner's estimate for MP3).
MP3_BYTES_PER_SECOND = 24_000


@functools.lru_cache(maxsize=4)
def template_tiles(path: str, spec: FeatureSpec) -> np.ndarray:
    """The tiles of one real audio file, extracted once per process (and the build's task
    module imported, as on a warm worker)."""
    import featurestore.build_tasks  # noqa: F401
    result = extract_track(path, spec)
    if result is None or result.status != "ok":
        raise ValueError(f"{path}: no tiles to repeat ({result and result.error})")
    return result.tiles


def seconds_per_audio_second(path: str, spec: FeatureSpec, repeats: int = 3) -> float:
    """Our extraction's wall time per audio second over ``path`` in this process (best of
    ``repeats``, after a warm-up)."""
    template_tiles(path, spec)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = extract_track(path, spec)
        best = min(best, (time.perf_counter() - start) / result.duration_s)
    return best


@dataclass(frozen=True)
class MeasuredTimeExtraction:
    """An ``extractor`` for :func:`featurestore.build`: sleeps ``seconds_per_audio_second``
    times ``slowdown`` per second of the track's audio (as the planner estimates it from the
    file's size) and returns real tiles of ``template`` repeated to that length."""

    seconds_per_audio_second: float
    template: str
    slowdown: float = 1.0

    def __call__(self, path: str, spec: FeatureSpec, storage_options: dict | None = None,
                 known_hash: str | None = None) -> TrackResult:
        size = os.path.getsize(path)
        duration = estimate_seconds(path, size)
        time.sleep(duration * self.seconds_per_audio_second * self.slowdown)
        real = template_tiles(self.template, spec)
        n = max(int(duration // spec.tile_seconds), 1)
        tiles = real[np.arange(n) % len(real)]
        return TrackResult("ok", "", tiles, f"simulated-{size}", duration, 44100, 2)


def sparse_library(directory: str, n_tracks: int, seconds: float) -> list[dict]:
    """Catalog rows of ``n_tracks`` sparse ``.mp3`` files sized like ``seconds`` of MP3 audio
    (nothing is stored: only the planner and :class:`MeasuredTimeExtraction` read the size)."""
    os.makedirs(directory, exist_ok=True)
    size = int(seconds * MP3_BYTES_PER_SECOND)
    rows = []
    for i in range(n_tracks):
        path = os.path.join(directory, f"t{i:07d}.mp3")
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as f:
                f.truncate(size)
        rows.append({"track_id": f"t{i:07d}", "path": path, "genres": "Drama"})
    return rows


async def host_workers(scheduler_file: str, n: int) -> None:
    """Start ``n`` single-threaded workers in this process and serve until killed."""
    from distributed import Worker

    workers = [Worker(scheduler_file=scheduler_file, nthreads=1, memory_limit=0,
                      name=f"{os.getpid()}-{i}") for i in range(n)]
    await asyncio.gather(*workers)
    await asyncio.gather(*(w.finished() for w in workers))


if __name__ == "__main__":
    asyncio.run(host_workers(sys.argv[1], int(sys.argv[2])))
