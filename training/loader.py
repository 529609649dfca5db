"""Reading tiles for training: block shuffle over Zarr chunks, lazily, in bounded memory.

Random single-tile reads from chunked storage are 10-100x slower than reading whole chunks, so
an epoch's tiles are grouped by the chunk that holds them; the chunks are visited in a shuffled
order (split between DataLoader workers), each read once as one contiguous slice, several read
ahead in parallel threads (:func:`featurestore.tile_arrays.read_groups`) while batches leave, and
tiles are mixed in a buffer of ``buffer_chunks`` chunks before batches leave. When every tile a run needs
fits ``memory_budget_mb``, they are read once and kept (the fast path); batches are then drawn
from memory in a full shuffle.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from featurestore.tile_arrays import (READ_THREADS, Moments, TileSource, blocks, forget_handles,
                                       read_groups, read_tiles)


class BlockShuffleTiles(IterableDataset):
    """Batches ``(tiles, targets)`` of the current plan (``set_plan``), read block-wise.

    Each DataLoader worker takes every n-th chunk of the shuffled chunk order, so an epoch
    yields every planned tile exactly once (repeats in the plan are yielded as repeats).
    ``read_threads``: chunk reads in flight per process."""

    def __init__(self, source: TileSource, batch_size: int = 128, buffer_chunks: int = 8,
                 shuffle: bool = True, seed: int = 0, read_threads: int = READ_THREADS):
        self.source, self.batch_size, self.read_threads = source, batch_size, read_threads
        self.buffer_chunks, self.shuffle, self.seed = buffer_chunks, shuffle, seed
        self.index = np.zeros(0, dtype=np.int64)
        self.targets = np.zeros(0, dtype=np.float32)
        self.epoch = 0
        self.memory: tuple[np.ndarray, np.ndarray] | None = None  # (sorted indices, tiles)

    def set_plan(self, index: np.ndarray, targets: np.ndarray, epoch: int = 0) -> None:
        self.index, self.targets, self.epoch = np.asarray(index, np.int64), targets, epoch

    def preload(self, index: np.ndarray) -> None:
        """Read the tiles at ``index`` once and serve every later plan from memory."""
        keys = np.unique(index)
        self.memory = (keys, read_tiles(self.source, keys, self.read_threads))

    def _batches(self, x: np.ndarray, y: np.ndarray):
        for start in range(0, len(x), self.batch_size):
            yield (torch.from_numpy(x[start:start + self.batch_size])[:, None],
                   torch.from_numpy(np.ascontiguousarray(y[start:start + self.batch_size])))

    def __iter__(self):
        info = get_worker_info()
        worker, n_workers = (info.id, info.num_workers) if info else (0, 1)
        rng = np.random.default_rng([self.seed, self.epoch, worker])
        if self.memory is not None:
            keys, tiles = self.memory
            order = rng.permutation(len(self.index)) if self.shuffle else np.arange(
                len(self.index))
            order = order[worker::n_workers]
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                x = tiles[np.searchsorted(keys, self.index[rows])]
                yield from self._batches(x, self.targets[rows])
            return
        array, chunk = self.source.covering(self.index), self.source.chunk_tiles
        groups = blocks(self.index, chunk)
        if self.shuffle:
            groups = [groups[i] for i in np.random.default_rng(
                [self.seed, self.epoch]).permutation(len(groups))]
        groups = groups[worker::n_workers]
        xs, ys, held = [], [], 0
        read = read_groups(array, self.index, groups, self.read_threads)
        for i, (positions, block) in enumerate(zip(groups, read)):
            xs.append(block)
            ys.append(self.targets[positions])
            held += len(positions)
            if held >= self.buffer_chunks * chunk or i == len(groups) - 1:
                y = np.concatenate(ys)
                order = rng.permutation(len(y)) if self.shuffle else np.arange(len(y))
                full = len(y) - len(y) % self.batch_size if i < len(groups) - 1 else len(y)
                yield from self._batches(_gather(xs, order[:full]), y[order[:full]])
                xs, ys = [_gather(xs, order[full:])], [y[order[full:]]]
                held = len(ys[0])


def _gather(parts: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """``np.concatenate(parts)[rows]`` with each tile copied once, not twice: the loader's
    thread does this for every tile of an epoch."""
    out = np.empty((len(rows), *parts[0].shape[1:]), dtype=parts[0].dtype)
    start = 0
    for part in parts:
        mine = (rows >= start) & (rows < start + len(part))
        out[mine] = part[rows[mine] - start]
        start += len(part)
    return out


def _fresh_handles(_worker: int) -> None:
    forget_handles()  # a forked worker opens its own store handles (object-store clients)


def make_loader(dataset: BlockShuffleTiles, workers: int = 0) -> DataLoader:
    """A DataLoader over the dataset's batches (``batch_size=None``: the dataset batches)."""
    return DataLoader(dataset, batch_size=None, num_workers=workers,
                      persistent_workers=False, prefetch_factor=4 if workers else None,
                      worker_init_fn=_fresh_handles if workers else None,
                      pin_memory=torch.cuda.is_available())


def tile_moments(source: TileSource, index: np.ndarray,
                 memory: tuple[np.ndarray, np.ndarray] | None = None) -> Moments:
    """Per-value count, sum and sum of squares of the tiles at ``index`` (each once), read
    block-wise (or from the preloaded tiles)."""
    keys = np.unique(index)
    array, chunk = source.covering(index), source.chunk_tiles
    shape = tuple(array.shape[1:])
    total = Moments.zeros(shape)
    groups = blocks(keys, chunk)  # one chunk's tiles at a time, in float64
    chunks = ((memory[1][np.searchsorted(memory[0], keys[g])] for g in groups)
              if memory is not None else read_groups(array, keys, groups))
    for tiles in chunks:
        total = total + Moments.of(tiles, shape)
    return total
