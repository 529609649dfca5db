"""Augmentations for track-level training, applied per batch on the device.

- :func:`crop_windows`: random crops across neighbouring tiles: a window of ``k`` tiles' frames
  starting at any frame of the track, so tile boundaries move every epoch.
- :func:`spec_augment`: SpecAugment-style masking of random bands of rows (frequency) and of
  frames (time), filled with the per-value training mean (zero after standardization).
- :func:`mixup`: convex mixes of pairs of tracks' pooled embeddings and of their targets.
"""

from __future__ import annotations

import numpy as np
import torch


def crop_windows(tiles: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, k: int,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """For each track (its tiles at ``starts``, ``counts`` of them, in ``tiles`` ``(n, rows,
    frames)``), ``min(k, count)`` consecutive tile-sized windows starting at a random frame.
    Returns the windows ``(sum, rows, frames)`` track after track, and their counts."""
    frames = tiles.shape[-1]
    device = tiles.device
    take = counts.clamp(max=k)
    span = (counts - take) * frames  # the last frame a crop may start at
    offset = (torch.rand(len(counts), generator=generator, device=device)
              * (span + 1)).long().clamp(max=span)
    track = torch.repeat_interleave(torch.arange(len(counts), device=device), take)
    first = torch.cumsum(take, 0) - take
    window = torch.arange(len(track), device=device) - first[track]
    position = (offset[track] + window * frames)[:, None] + torch.arange(frames, device=device)
    rows = starts[track][:, None] + position // frames
    return tiles[rows, :, position % frames].transpose(1, 2), take


def spec_augment(x: torch.Tensor, fill: torch.Tensor, max_rows: float = 0.1,
                 max_frames: float = 0.1, masks: int = 2,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``x`` ``(n, rows, frames)`` with ``masks`` bands of up to ``max_rows`` of the rows and
    ``masks`` spans of up to ``max_frames`` of the frames set to ``fill`` (``(rows, frames)``)
    in every tile; a new tensor."""
    n, rows, frames = x.shape
    keep = torch.ones(n, rows, frames, dtype=torch.bool, device=x.device)
    for size, axis in ((rows, 1), (frames, 2)):
        limit = max(int(size * (max_rows if axis == 1 else max_frames)), 1)
        grid = torch.arange(size, device=x.device)
        for _ in range(masks):
            width = torch.randint(0, limit + 1, (n, 1), generator=generator, device=x.device)
            start = (torch.rand(n, 1, generator=generator, device=x.device)
                     * (size - width + 1)).long()
            band = (grid >= start) & (grid < start + width)  # (n, size)
            keep &= ~(band[:, :, None] if axis == 1 else band[:, None, :])
    return torch.where(keep, x, fill.to(x.dtype))


def mixup(features: torch.Tensor, targets: torch.Tensor, alpha: float,
          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row mixed with a random other row, weight ``lam ~ Beta(alpha, alpha)`` per row
    (kept on the row's own side, ``lam >= 0.5``), targets mixed alike."""
    if alpha <= 0 or len(features) < 2:
        return features, targets
    # torch's Beta draws from the global generator; numpy's, seeded from ``generator``, keeps a
    # seeded run's draws its own
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = torch.from_numpy(np.random.default_rng(seed).beta(alpha, alpha, (len(features), 1)))
    lam = lam.to(features.device, features.dtype)
    lam = torch.maximum(lam, 1 - lam)
    other = torch.randperm(len(features), generator=generator).to(features.device)
    return (lam * features + (1 - lam) * features[other],
            lam * targets + (1 - lam) * targets[other])
