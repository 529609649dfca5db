"""The training loop of a track-level network (:class:`training.track_models.PooledCNN`).

Every epoch visits each training track once, in batches of ``tracks_per_batch`` tracks; a track
contributes a random crop of ``crop_tiles`` neighbouring tiles' worth of frames
(:func:`training.augment.crop_windows`), masked (SpecAugment), and batches are mixed up at the
pooled embedding. Validation scores every tile of each validation track; the best weights are
those of the highest validation LRAP (lower loss on ties), and training stops after
``patience`` epochs without a better one. The tiles live in memory (on the device) for the whole
run; a checkpoint is written at most every ``checkpoint_seconds`` and when training ends, so an
interrupted run resumes from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import label_ranking_average_precision_score
from torch import nn

from training.augment import crop_windows, mixup, spec_augment
from training.config import TrainConfig
from training.inference import autocast
from training.loop import Checkpointer, EarlyStopping, make_optimizer


@dataclass
class TrackSet:
    """Tracks whose tiles are rows of one in-memory tensor: ``starts`` and ``counts`` of each
    track's rows, and its multi-hot ``targets``; all on the training device."""

    starts: torch.Tensor   # (tracks,) int64
    counts: torch.Tensor   # (tracks,) int64
    targets: torch.Tensor  # (tracks, classes) float32

    def __len__(self) -> int:
        return len(self.starts)


def tiles_of(tiles: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Every tile of the tracks at ``starts`` (``counts`` each), track after track."""
    rows = torch.repeat_interleave(starts - (torch.cumsum(counts, 0) - counts), counts)
    return tiles[rows + torch.arange(len(rows), device=tiles.device)]


def predict_tracks(model: nn.Module, tiles: torch.Tensor, tracks: TrackSet, config: TrainConfig,
                   max_tiles: int = 4096) -> torch.Tensor:
    """Track logits of every track in ``tracks`` from all of its tiles, a few tracks at a
    time (about ``max_tiles`` tiles per forward pass)."""
    model.eval()
    out = []
    device = tiles.device
    counts = tracks.counts.tolist()  # one copy from the device, not one per track
    with torch.no_grad():
        start = 0
        while start < len(tracks):
            stop, total = start + 1, counts[start]
            while stop < len(tracks) and total + counts[stop] <= max_tiles:
                total += counts[stop]
                stop += 1
            s, c = tracks.starts[start:stop], tracks.counts[start:stop]
            x = tiles_of(tiles, s, c)[:, None]
            with autocast(device, config.mixed_precision):
                out.append(model.forward_tracks(x, c).float())
            start = stop
    return torch.cat(out) if out else torch.zeros((0, tracks.targets.shape[1]))


def fit_tracks(model: nn.Module, tiles: torch.Tensor, train: TrackSet, val: TrackSet,
               config: TrainConfig, checkpoint: Checkpointer, label: str = "",
               progress: bool = True,
               on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place on ``tiles`` ``(n, rows, frames)`` (on the training device);
    on return it holds the best weights. Returns the history rows, resumed ones included."""
    device = tiles.device
    model.to(device=device, memory_format=torch.channels_last)
    pos = train.targets.sum(0)
    weight = ((len(train) - pos) / pos.clamp_min(1)) if config.balance == "weights" else None
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=weight)
    opt, sched = make_optimizer(model, config)
    fill = model.standardize.mean
    # the best weights: the highest validation LRAP, the lower loss on ties
    keeper = EarlyStopping(model, opt, sched, checkpoint, config, (-1.0, -float("inf")), label,
                           progress, on_epoch)
    start = keeper.resume()
    if keeper.done:
        return keeper.finish()
    for epoch in range(start, config.epochs):
        model.train()
        # sums kept on the device: no wait for the GPU within an epoch
        started = time.perf_counter()
        total, seen = torch.zeros((), device=device), torch.zeros((), device=device)
        order = torch.randperm(len(train)).to(device)
        for lo in range(0, len(order), config.tracks_per_batch):
            pick = order[lo:lo + config.tracks_per_batch]
            x, counts = crop_windows(tiles, train.starts[pick], train.counts[pick],
                                     config.crop_tiles)
            if config.spec_augment:
                x = spec_augment(x, fill)
            x = x[:, None]
            with autocast(device, config.mixed_precision):
                pooled = model.pooled(x, counts)
            features, y = mixup(pooled.float(), train.targets[pick], config.mixup)
            loss = loss_fn(model.head(features).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(pick)
            seen += counts.sum()
        seen = int(seen)  # waits for the epoch's last step, so that the time is its own
        seconds = time.perf_counter() - started
        lr = opt.param_groups[0]["lr"]
        sched.step()
        logits = predict_tracks(model, tiles, val, config)
        val_loss = float(nn.functional.binary_cross_entropy_with_logits(logits, val.targets))
        val_lrap = float(label_ranking_average_precision_score(
            val.targets.cpu().numpy(), logits.cpu().numpy()))
        row = {"member": label, "epoch": epoch, "train_loss": float(total) / len(train),
               "val_loss": val_loss, "val_lrap": val_lrap, "lr": lr, "tiles": seen,
               "seconds": seconds, "tiles_per_s": seen / max(seconds, 1e-9)}
        if keeper.end_epoch(row, (val_lrap, -val_loss), note=f" LRAP {val_lrap:.3f}"):
            break
    return keeper.finish()


def track_set(starts: np.ndarray, counts: np.ndarray, targets: np.ndarray,
              device: torch.device) -> TrackSet:
    """A :class:`TrackSet` on ``device``."""
    return TrackSet(torch.as_tensor(starts, dtype=torch.long, device=device),
                    torch.as_tensor(counts, dtype=torch.long, device=device),
                    torch.as_tensor(targets, dtype=torch.float32, device=device))
