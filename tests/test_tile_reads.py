"""Reading tiles several chunks at a time, in pieces read ahead, and onto the training device:
the same tiles in the same order as one read at a time; and the training defaults that follow
the device."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from featurestore.spec import FeatureSpec, TileEncoding
from featurestore.tile_arrays import (TileArrays, TileSource, _blosc_chunks, in_order, read_pieces,
                                      read_range, read_tiles)
from training.config import GPU_BATCH, TrainConfig
from training.device_feed import to_device
from training.memory_budget import budget_bytes, tile_bytes


@pytest.fixture(scope="module")
def tile_store(tmp_path_factory):
    """50 tiles in chunks of 4 (13 chunks), and the tiles themselves."""
    url = str(tmp_path_factory.mktemp("tiles") / "tiles.zarr")
    arrays = TileArrays.create(url, FeatureSpec(), TileEncoding(chunk_tiles=4))
    arrays.ensure_capacity(50)
    tiles = np.random.default_rng(0).standard_normal((50, 40, 100), dtype=np.float32)
    arrays.write_region(0, tiles, np.zeros(50, np.int64), np.arange(50, dtype=np.int32))
    return TileSource(url), tiles


def test_parallel_chunk_reads_give_the_tiles_in_the_order_asked(tile_store):
    source, tiles = tile_store
    index = np.random.default_rng(1).integers(0, 50, 80)  # shuffled, with repeats
    for threads in (1, 3, 16):
        np.testing.assert_array_equal(read_tiles(source, index, threads), tiles[index])


def test_local_chunk_files_read_as_zarr_reads_them(tmp_path):
    """The store's local arrays are decoded from their chunk files (not through Zarr): every
    range, across chunks, into the padded tail and into chunks never written, equals Zarr's
    own read; an array Zarr keeps elsewhere (here in memory) is read by Zarr."""
    import zarr

    url = str(tmp_path / "tiles.zarr")
    arrays = TileArrays.create(url, FeatureSpec(), TileEncoding(chunk_tiles=4))
    arrays.ensure_capacity(80)  # chunks 13-19 never written: no files, the fill value
    tiles = np.random.default_rng(3).standard_normal((50, 40, 100), dtype=np.float32)
    arrays.write_region(0, tiles, np.zeros(50, np.int64), np.arange(50, dtype=np.int32))
    array = TileSource(url).array()
    assert _blosc_chunks(array) == str(tmp_path / "tiles.zarr" / array.path)
    assert array.shape[0] == 80
    for lo, hi in [(0, 1), (5, 7), (3, 13), (0, 50), (47, 53), (49, 80), (60, 64), (0, 80),
                   (77, 90), (85, 90)]:
        np.testing.assert_array_equal(read_range(array, lo, hi), np.asarray(array[lo:hi]))
    index = np.random.default_rng(4).integers(0, 80, 200)
    np.testing.assert_array_equal(read_tiles(TileSource(url), index, 3), array[:][index])
    in_memory = zarr.create_array(zarr.storage.MemoryStore(), shape=(10, 2), chunks=(4, 2),
                                  dtype="float32")
    in_memory[:] = np.arange(20, dtype=np.float32).reshape(10, 2)
    assert _blosc_chunks(in_memory) is None
    np.testing.assert_array_equal(read_range(in_memory, 3, 9), in_memory[3:9])


def test_pieces_cover_the_index_in_order(tile_store):
    source, tiles = tile_store
    index = np.random.default_rng(2).permutation(50)[:37]
    pieces = list(read_pieces(source, index, 8))
    assert [len(p) for p in pieces] == [8, 8, 8, 8, 5]
    np.testing.assert_array_equal(np.concatenate(pieces), tiles[index])
    assert list(read_pieces(source, index[:0], 8)) == []


def test_in_order_runs_ahead_by_at_most_its_threads_and_stops_with_the_consumer():
    started, lock = [], threading.Lock()

    def slow(i):
        with lock:
            started.append(i)
        time.sleep(0.05 if i == 0 else 0.001)  # the first finishes last
        return i * i

    results = in_order(slow, range(100), threads=3)
    assert [next(results) for _ in range(2)] == [0, 1]
    time.sleep(0.1)
    assert len(started) <= 2 + 3  # taken, plus at most `threads` in flight
    results.close()
    count = len(started)
    time.sleep(0.1)
    assert len(started) == count  # nothing new after the consumer stopped
    assert list(in_order(slow, range(10), threads=4)) == [i * i for i in range(10)]
    assert list(in_order(slow, range(10), threads=1)) == [i * i for i in range(10)]


def test_device_feed_passes_batches_through_on_the_cpu():
    batches = [(torch.randn(4, 1, 40, 100), torch.rand(4, 3)) for _ in range(5)]
    fed = list(to_device(iter(batches), torch.device("cpu")))
    assert len(fed) == 5
    for (x, y), (fx, fy) in zip(batches, fed):
        assert torch.equal(x, fx) and torch.equal(y, fy)
        assert fx.is_contiguous(memory_format=torch.channels_last)


def test_study_models_take_large_batches_and_a_scaled_rate_on_a_gpu_unless_set():
    gpu = TrainConfig(arch="ensemble", device="cuda").resolved()
    assert gpu.batch_size == GPU_BATCH
    assert gpu.learning_rate == pytest.approx(0.01 * (GPU_BATCH / 128) ** 0.5)
    cpu = TrainConfig(arch="ensemble", device="cpu").resolved()
    assert (cpu.batch_size, cpu.learning_rate) == (128, 0.01)
    mine = TrainConfig(arch="cnn", device="cuda", batch_size=256).resolved()
    assert (mine.batch_size, mine.learning_rate) == (256, 0.01)
    rate = TrainConfig(arch="cnn", device="cuda", learning_rate=0.05).resolved()
    assert (rate.batch_size, rate.learning_rate) == (GPU_BATCH, 0.05)
    # pooled's batches are tracks (tracks_per_batch): on a GPU too, no tile batch and its rate
    pooled = TrainConfig(arch="pooled", device="cuda").resolved()
    assert (pooled.batch_size, pooled.learning_rate) == (None, 3e-3)


def test_memory_budget_is_the_setting_or_a_share_of_free_memory():
    cpu = torch.device("cpu")
    assert budget_bytes(TrainConfig(memory_budget_mb=2), cpu) == 2 * 2**20
    assert budget_bytes(TrainConfig(memory_budget_mb=0), cpu) == 0
    default = budget_bytes(TrainConfig(), cpu)
    import psutil

    assert 0 < default <= psutil.virtual_memory().total // 4
    with pytest.raises(ValueError, match="tile_dtype"):
        TrainConfig(tile_dtype="float16")
    # bfloat16 halves the ensemble's tiles on a CUDA device; host copies stay float32
    narrow = dict(tile_dtype="bfloat16")
    assert tile_bytes((40, 100), TrainConfig(arch="ensemble", **narrow),
                      torch.device("cuda")) == 8000
    assert tile_bytes((40, 100), TrainConfig(arch="cnn", **narrow), torch.device("cuda")) == 16000
    assert tile_bytes((40, 100), TrainConfig(arch="ensemble", **narrow), cpu) == 16000
