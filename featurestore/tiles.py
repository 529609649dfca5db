"""Where MFCC tiles are cut: fixed-size windows of frames, in track order."""

from __future__ import annotations

import numpy as np

from featurestore.spec import FeatureSpec


def count_tiles(n_frames: int, spec: FeatureSpec) -> int:
    """Whole tiles in ``n_frames`` frames; a trailing partial tile is dropped."""
    if n_frames < spec.tile_frames:
        return 0
    return 1 + (n_frames - spec.tile_frames) // spec.tile_hop


def cut_tiles(features: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    """Cut ``(n_coefficients, n_frames)`` into ``(n_tiles, n_coefficients, tile_frames)``.

    Tile ``i`` holds frames ``i * tile_hop .. i * tile_hop + tile_frames - 1``. The result is a
    new contiguous float32 array, never a view of ``features``.
    """
    n_coef, n_frames = features.shape
    if n_coef != spec.n_coefficients:
        raise ValueError(f"expected {spec.n_coefficients} coefficients, got {n_coef}")
    n = count_tiles(n_frames, spec)
    if n == 0:
        return np.zeros((0, n_coef, spec.tile_frames), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(features, spec.tile_frames, axis=1)
    # windows: (n_coef, n_frames - tile_frames + 1, tile_frames) -> pick starts, tiles first
    return np.ascontiguousarray(windows[:, : n * spec.tile_hop : spec.tile_hop].transpose(1, 0, 2),
                                dtype=np.float32)
