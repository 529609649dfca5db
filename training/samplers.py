"""Which tiles an epoch sees, with which targets: the balancing schemes, one object each.

A sampler's ``epoch(n)`` returns ``(index, targets)``: store tile indices (repeats allowed) and
their targets, a fresh draw per epoch, reproducible from ``(seed, n)``. The loader decides the
reading order; a sampler only decides the content.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from featurestore.tile_arrays import tile_rows


@dataclass
class TileTable:
    """The tiles of a set of tracks: store index, owning track, and the track's multi-hot
    targets (a tile has all its track's labels)."""

    index: np.ndarray      # (n_tiles,) int64, rows of the tile arrays
    track: np.ndarray      # (n_tiles,) int64, rows of ``targets``
    targets: np.ndarray    # (n_tracks, n_classes) float32

    @classmethod
    def of(cls, tracks: pd.DataFrame, targets: np.ndarray) -> TileTable:
        counts = tracks["n_tiles"].to_numpy(np.int64)
        index, _ = tile_rows(tracks["tile_start"].to_numpy(np.int64), counts)
        return cls(index, np.repeat(np.arange(len(tracks)), counts), targets)

    @property
    def labels(self) -> np.ndarray:
        """``(n_tiles, n_classes)`` multi-hot labels of every tile."""
        return self.targets[self.track]

    def __len__(self) -> int:
        return len(self.index)


def _draw(rng: np.random.Generator, pool: np.ndarray, n: int) -> np.ndarray:
    """``n`` of ``pool``: without replacement while it lasts, then with (oversampling)."""
    if n <= len(pool):
        return rng.choice(pool, n, replace=False)
    return np.concatenate([pool, rng.choice(pool, n - len(pool), replace=True)])


class MultiClassSampler:
    """For softmax models: a tile is drawn under one of its classes, whose id is its target
    (a tile with several labels recurs under each, as in the study). ``equal``: the smallest
    class's tile count from every class; ``oversample``: the largest's; ``none``/``weights``:
    every (tile, label) pair once."""

    def __init__(self, table: TileTable, balance: str = "equal", seed: int = 0):
        self.table, self.balance, self.seed = table, balance, seed
        labels = table.labels
        self.members = [np.flatnonzero(labels[:, c]) for c in range(labels.shape[1])]
        self.counts = np.array([len(m) for m in self.members])
        if (self.counts == 0).any():
            raise ValueError("a class has no tiles on this side of the split")

    def epoch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, n])
        per_class = {"equal": self.counts.min(), "oversample": self.counts.max()}.get(
            self.balance)
        picks, targets = [], []
        for c, pool in enumerate(self.members):
            chosen = pool if per_class is None else _draw(rng, pool, int(per_class))
            picks.append(chosen)
            targets.append(np.full(len(chosen), c, dtype=np.int64))
        rows = np.concatenate(picks)
        return self.table.index[rows], np.concatenate(targets)

    def loss_weights(self) -> torch.Tensor | None:
        if self.balance != "weights":
            return None
        return torch.tensor(self.counts.sum() / (len(self.counts) * self.counts),
                            dtype=torch.float32)


class OneVsRestSampler:
    """For one ensemble member (class ``k``): every positive tile, and a fresh uniform sample of
    the negatives each epoch, as many as the positives (``equal``). ``oversample``: positives
    drawn up to the negatives' number; ``none``/``weights``: every tile once."""

    def __init__(self, table: TileTable, k: int, balance: str = "equal", seed: int = 0):
        self.table, self.balance, self.seed = table, balance, seed
        positive = table.labels[:, k] > 0
        self.pos, self.neg = np.flatnonzero(positive), np.flatnonzero(~positive)
        if len(self.pos) == 0 or len(self.neg) == 0:
            raise ValueError("a class has no positive or no negative tiles on this side")

    def epoch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng([self.seed, n])
        pos, neg = self.pos, self.neg
        if self.balance == "equal":
            neg = rng.choice(neg, min(len(pos), len(neg)), replace=False)
        elif self.balance == "oversample":
            pos = _draw(rng, pos, max(len(pos), len(neg)))
        rows = np.concatenate([pos, neg])
        targets = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))]).astype(np.float32)
        return self.table.index[rows], targets[:, None]

    def loss_weights(self) -> torch.Tensor | None:
        if self.balance != "weights":
            return None
        return torch.tensor([len(self.neg) / len(self.pos)], dtype=torch.float32)


class MultiLabelSampler:
    """For the multi-label model: targets are the tile's multi-hot labels. ``equal``: the
    smallest class's tile count drawn from every class (a tile may come once per label);
    ``oversample``: the largest's; ``none``/``weights``: every tile once."""

    def __init__(self, table: TileTable, balance: str = "equal", seed: int = 0):
        self.inner = MultiClassSampler(table, balance, seed)
        self.table, self.balance = table, balance

    def epoch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        if self.balance in ("none", "weights"):
            return self.table.index, self.table.labels
        rng = np.random.default_rng([self.inner.seed, n])
        per_class = (self.inner.counts.min() if self.balance == "equal"
                     else self.inner.counts.max())
        rows = np.concatenate([_draw(rng, pool, int(per_class)) for pool in self.inner.members])
        return self.table.index[rows], self.table.labels[rows]

    def loss_weights(self) -> torch.Tensor | None:
        if self.balance != "weights":
            return None
        counts = self.inner.counts
        return torch.tensor((len(self.table) - counts) / counts, dtype=torch.float32)
