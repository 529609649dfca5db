"""The Zarr v3 arrays that hold a feature set's tiles (group ``tiles.zarr``: the tiles, named
for the spec's kind, ``mfcc`` or ``logmel``; ``entry``, ``offset``, and the ``coefficient`` and
``frame`` coordinates; docs/store-format.md describes each).

The group's metadata is consolidated (``zarr.consolidate_metadata``), so that xarray and other
readers open it in one read; it is rewritten whenever the arrays grow, before any tile in the new
slots is committed. This code opens the arrays from their own metadata.

Slots are handed out chunk-aligned, one region per build task, so no two writers ever touch one
chunk (concurrent unaligned writes to a chunk lose data). A region's tail may stay unused; the
manifest, not the array, says which slots are live.

Reading: random single-tile reads from chunked storage are 10-100x slower than reading whole
chunks, so every reader of tiles (``Store.tiles``, training's loader, scoring's tasks, the
build's statistics) goes through :func:`read_indexed`: the tiles at any rows, grouped by the
chunk that holds them, each group read as one contiguous slice, up to :data:`READ_THREADS` groups
in flight at once. A local array's chunks are decoded by the reading threads themselves, outside
the GIL (:func:`read_range`), so concurrent chunk reads use every core; one after another they
use one.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING

import numpy as np

from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.urls import is_local, normalize_url

if TYPE_CHECKING:  # annotations only: Zarr is imported where arrays are opened
    import zarr


def zarr_store(url: str, storage_options: dict | None = None, read_only: bool = False):
    """A zarr store for ``url``: LocalStore for local paths (atomic chunk writes), else fsspec."""
    import zarr.storage  # on first use: listing a store's tracks needs no Zarr

    if is_local(url):
        return zarr.storage.LocalStore(normalize_url(url), read_only=read_only)
    return zarr.storage.FsspecStore.from_url(url, storage_options=storage_options or {},
                                             read_only=read_only)


def tile_rows(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every tile of tracks stored at ``starts`` with ``counts`` tiles each: its row in the
    arrays and its offset within its track, in track order, without a Python loop."""
    counts = np.asarray(counts, dtype=np.int64)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + offsets, offsets


def round_up(n: int, chunk: int) -> int:
    return -(-n // chunk) * chunk


@dataclass
class TileArrays:
    """Open handles on one feature set's arrays."""

    mfcc: zarr.Array  # the tiles, whatever the spec's kind
    entry: zarr.Array
    offset: zarr.Array

    @property
    def chunk_tiles(self) -> int:
        return self.mfcc.chunks[0]

    @property
    def capacity(self) -> int:
        return self.mfcc.shape[0]

    @classmethod
    def create(cls, url: str, spec: FeatureSpec, encoding: TileEncoding,
               storage_options: dict | None = None) -> TileArrays:
        import zarr
        import zarr.codecs

        group = zarr.open_group(zarr_store(url, storage_options), mode="a", zarr_format=3)
        if spec.kind in group:
            return cls.open(url, storage_options, read_only=False)
        # The tile array comes last: without it, whatever is here is a creation killed midway,
        # holding no tiles, and is overwritten.
        n = encoding.chunk_tiles
        n_coef, frames = spec.tile_shape
        blosc = zarr.codecs.BloscCodec(cname=encoding.codec, clevel=encoding.clevel,
                                       shuffle=encoding.shuffle)
        group.attrs.update({"spec_hash": spec.hash, "spec": spec.to_dict(),
                            "tile_seconds": spec.tile_seconds})
        group.create_array("coefficient", data=np.asarray(spec.coefficients, dtype=np.int32),
                           dimension_names=("coefficient",), overwrite=True)
        group.create_array("frame", data=np.arange(frames, dtype=np.int32),
                           dimension_names=("frame",), overwrite=True)
        group.create_array("entry", shape=(0,), chunks=(n,), dtype="int64", fill_value=-1,
                           dimension_names=("tile",), overwrite=True)
        group.create_array("offset", shape=(0,), chunks=(n,), dtype="int32", fill_value=-1,
                           dimension_names=("tile",), overwrite=True)
        units = ("MFCC (dB-scaled mel cepstrum)" if spec.kind == "mfcc"
                 else "log-mel power (dB, ref 1.0)")
        group.create_array(spec.kind, shape=(0, n_coef, frames), chunks=(n, n_coef, frames),
                           dtype="float32", fill_value=0.0, compressors=blosc,
                           dimension_names=("tile", "coefficient", "frame"),
                           attributes={"units": units}, overwrite=True)
        arrays = cls(group[spec.kind], group["entry"], group["offset"])
        arrays.consolidate()
        return arrays

    @classmethod
    def open(cls, url: str, storage_options: dict | None = None,
             read_only: bool = True) -> TileArrays:
        import zarr

        group = zarr.open_group(zarr_store(url, storage_options, read_only=read_only),
                                mode="r" if read_only else "r+", zarr_format=3,
                                use_consolidated=False)
        kind = group.attrs.get("spec", {}).get("kind", "mfcc")
        return cls(group[kind], group["entry"], group["offset"])

    def consolidate(self) -> None:
        """Write the group's consolidated metadata: the arrays as they are now."""
        import zarr

        with warnings.catch_warnings():
            # that consolidated metadata is outside the Zarr 3 specification concerns readers
            # without it, who read the arrays' own metadata as before
            warnings.filterwarnings("ignore", "Consolidated metadata", UserWarning)
            zarr.consolidate_metadata(self.mfcc.store)

    def ensure_capacity(self, n_tiles: int) -> None:
        """Grow the arrays to hold at least ``n_tiles`` slots (geometrically, to rewrite the
        arrays' metadata rarely), and consolidate the new shapes."""
        if n_tiles <= self.capacity:
            return
        new = round_up(max(n_tiles, 2 * self.capacity), self.chunk_tiles)
        self.mfcc.resize((new, *self.mfcc.shape[1:]))
        self.entry.resize((new,))
        self.offset.resize((new,))
        self.consolidate()

    def write_region(self, start: int, tiles: np.ndarray, entries: np.ndarray,
                     offsets: np.ndarray) -> None:
        """Write whole chunks from ``start`` (chunk-aligned), padding unused slots."""
        chunk = self.chunk_tiles
        if start % chunk:
            raise ValueError(f"region start {start} is not aligned to chunks of {chunk}")
        n = len(tiles)
        if n == 0:
            return
        end = start + round_up(n, chunk)
        if end > self.capacity:
            raise ValueError(f"region {start}:{end} beyond capacity {self.capacity}")
        pad = end - start - n
        self.mfcc[start:end] = np.concatenate(
            [tiles, np.zeros((pad, *tiles.shape[1:]), dtype=np.float32)]) if pad else tiles
        self.entry[start:end] = np.concatenate([entries, np.full(pad, -1, dtype=np.int64)])
        self.offset[start:end] = np.concatenate([offsets, np.full(pad, -1, dtype=np.int32)])

    def read_ranges(self, ranges: list[tuple[int, int]]) -> np.ndarray:
        """Tiles of ``[(start, count), ...]`` concatenated, in order."""
        starts, counts = zip(*ranges) if ranges else ((), ())
        return read_indexed(self.mfcc, tile_rows(np.array(starts), np.array(counts))[0])


_OPEN: dict[str, object] = {}  # per process: the mfcc array of each tile store


@dataclass(frozen=True)
class TileSource:
    """Where tiles live: a feature set's tile arrays (local path or fsspec URL). Picklable, so
    that tasks and DataLoader workers name it and open it once per process."""

    tiles_url: str
    storage_options: dict = field(default_factory=dict)

    def array(self, min_tiles: int = 0):
        """The ``mfcc`` array, opened once per process; opened again when it must hold at
        least ``min_tiles`` slots and the handle is older than a build that grew it."""
        cached = _OPEN.get(self.tiles_url)
        if cached is None or cached.shape[0] < min_tiles:
            _OPEN[self.tiles_url] = TileArrays.open(self.tiles_url, self.storage_options).mfcc
        return _OPEN[self.tiles_url]

    def covering(self, index: np.ndarray):
        """The ``mfcc`` array, holding every row of ``index``."""
        return self.array(int(index.max()) + 1 if len(index) else 0)

    @property
    def chunk_tiles(self) -> int:
        return int(self.array().chunks[0])


def forget_handles() -> None:
    """Drop this process's open arrays (a forked process opens its own object-store clients)."""
    _OPEN.clear()


def blocks(index: np.ndarray, chunk_tiles: int) -> list[np.ndarray]:
    """Positions of ``index`` grouped by the chunk holding each tile, chunks in order."""
    order = np.argsort(index, kind="stable")
    chunk = index[order] // chunk_tiles
    cuts = np.flatnonzero(np.diff(chunk)) + 1
    return np.split(order, cuts) if len(order) else []


def read_block(array, index: np.ndarray) -> np.ndarray:
    """The tiles at ``index`` (all in one chunk or a few neighbours), one contiguous read."""
    lo, hi = int(index.min()), int(index.max()) + 1
    block = read_range(array, lo, hi)
    if len(index) == hi - lo and (len(index) < 2 or (np.diff(index) == 1).all()):
        return block  # the whole range in order (a preload, a track): no copy
    return block[index - lo]


def read_range(array, lo: int, hi: int) -> np.ndarray:
    """Rows ``lo:hi`` of a tile array, as ``array[lo:hi]`` reads them.

    A local array stored as the store writes it (bytes, then Blosc) is read chunk file by chunk
    file and decompressed in the calling thread, outside the GIL. Zarr's own read runs every
    chunk through its one event-loop thread, which also copies the chunk into the result; on 2
    cores this way reads 1.2x the tiles per second into memory and 1.3x through training's
    loader (``benchmarks/loader_throughput.py --compare-zarr``). Other arrays (object stores, other
    codecs) are read by Zarr."""
    folder, hi = _blosc_chunks(array), min(hi, array.shape[0])  # clipped, as a slice is
    if folder is None or hi <= lo:
        return np.asarray(array[lo:hi])
    size = int(array.chunks[0])
    first, last = lo // size, (hi - 1) // size
    if first == last:  # one chunk: a view of it, no copy
        return _chunk(array, folder, first)[lo - first * size:hi - first * size]
    out = np.empty((hi - lo, *array.shape[1:]), dtype=array.dtype)
    for c in range(first, last + 1):
        a, b = max(lo, c * size), min(hi, (c + 1) * size)
        out[a - lo:b - lo] = _chunk(array, folder, c)[a - c * size:b - c * size]
    return out


_BLOSC_FOLDERS: dict[tuple[str, str], str | None] = {}


def _blosc_chunks(array) -> str | None:
    """The folder of ``array``'s chunk files when :func:`read_range` can decode them itself:
    a local Zarr v3 array of one chunk along the other axes, little-endian bytes then Blosc,
    unsharded. ``None`` otherwise."""
    import zarr.storage
    from zarr.codecs import BloscCodec, BytesCodec

    if not isinstance(array.store, zarr.storage.LocalStore):
        return None
    key = (str(array.store.root), array.path)
    if key not in _BLOSC_FOLDERS:
        meta = array.metadata
        codecs = getattr(meta, "codecs", ())
        plain = (meta.zarr_format == 3 and len(codecs) == 2
                 and isinstance(codecs[0], BytesCodec) and isinstance(codecs[1], BloscCodec)
                 and (codecs[0].endian is None or codecs[0].endian.value == "little")
                 and array.dtype.byteorder in "<=|" and np.little_endian
                 and tuple(array.chunks[1:]) == tuple(array.shape[1:]))
        _BLOSC_FOLDERS[key] = os.path.join(*key) if plain else None
    return _BLOSC_FOLDERS[key]


def _chunk(array, folder: str, c: int) -> np.ndarray:
    """Chunk ``c`` along the first axis, decoded; the fill value where no file was written
    (Zarr leaves out chunks that hold only it)."""
    from numcodecs import Blosc

    shape = (int(array.chunks[0]), *array.shape[1:])
    path = os.path.join(folder, array.metadata.encode_chunk_key((c,) + (0,) * (len(shape) - 1)))
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return np.full(shape, array.metadata.fill_value, dtype=array.dtype)
    out = np.empty(shape, dtype=array.dtype)
    Blosc().decode(data, out=out)  # the frame names its own compressor and shuffle
    return out


#: Chunk groups read at once by :func:`read_groups` (and so by every tile reader).
READ_THREADS = min(32, 2 * (os.cpu_count() or 1))


def in_order(fn: Callable, items: Iterable, threads: int = READ_THREADS) -> Iterator:
    """``map(fn, items)`` with up to ``threads`` calls running ahead of the consumer, results in
    order: reads overlap with each other and with what the consumer does with the last one."""
    items = iter(items)
    if threads <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(threads) as pool:
        pending = deque(pool.submit(fn, item) for item in islice(items, threads))
        try:
            while pending:
                result = pending.popleft().result()
                for item in items:  # at most one new read per result taken
                    pending.append(pool.submit(fn, item))
                    break
                yield result
        finally:  # the consumer stopped early: no reads left running behind it
            for future in pending:
                future.cancel()


def read_groups(array, index: np.ndarray, groups: Iterable[np.ndarray],
                threads: int = READ_THREADS) -> Iterator[np.ndarray]:
    """The tiles at ``index[group]`` for each group of positions (from :func:`blocks`), in the
    order of ``groups``, ``threads`` groups read ahead in parallel."""
    return in_order(lambda group: read_block(array, index[group]), groups, threads)


def read_indexed(array, index: np.ndarray, threads: int = READ_THREADS) -> np.ndarray:
    """The tiles of ``array`` at ``index``, in that order, each chunk they touch read once
    (``threads`` chunks at a time)."""
    index = np.asarray(index, dtype=np.int64)
    tiles = np.empty((len(index), *array.shape[1:]), dtype=np.float32)
    groups = blocks(index, int(array.chunks[0]))

    def fill(group: np.ndarray) -> None:
        # the reading thread writes its tiles: a large result's first writes fault its pages
        # in, and numpy copies outside the GIL, so threads share that work too
        tiles[group] = read_block(array, index[group])

    # no thread pool for a read of one chunk group (a track's tiles, mostly)
    for _ in in_order(fill, groups, min(threads, len(groups))):
        pass
    return tiles


def read_tiles(source: TileSource, index: np.ndarray, threads: int = READ_THREADS) -> np.ndarray:
    """The tiles at ``index`` of ``source``, in that order, each chunk they touch read once
    (``threads`` chunks at a time)."""
    return read_indexed(source.covering(index), index, threads)


def read_pieces(source: TileSource, index: np.ndarray, piece_tiles: int,
                ahead: int = 2) -> Iterator[np.ndarray]:
    """The tiles at ``index`` in pieces of ``piece_tiles`` (in order), the next ``ahead`` pieces
    read while the consumer works on the current one."""
    array = source.covering(index)
    return in_order(lambda start: read_indexed(array, index[start:start + piece_tiles]),
                    range(0, len(index), piece_tiles), ahead)


@dataclass
class Moments:
    """Count, sum and sum of squares of tiles, per value, in float64: they add and subtract
    exactly enough to keep a feature set's mean and standard deviation current."""

    count: int
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def zeros(cls, shape: tuple[int, int]) -> Moments:
        return cls(0, np.zeros(shape), np.zeros(shape))

    @classmethod
    def of(cls, tiles: np.ndarray, shape: tuple[int, int]) -> Moments:
        if len(tiles) == 0:
            return cls.zeros(shape)
        t = tiles.astype(np.float64)
        return cls(len(tiles), t.sum(axis=0), np.square(t).sum(axis=0))

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total,
                       self.squares + other.squares)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.count - other.count, self.total - other.total,
                       self.squares - other.squares)

    @property
    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> np.ndarray:
        var = self.squares / max(self.count, 1) - np.square(self.mean)
        return np.sqrt(np.maximum(var, 0.0))
