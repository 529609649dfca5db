"""Track-level taggers: one prediction per track from all of its tiles.

Tags describe whole tracks, so these models see a track's tiles together and are trained on
track targets. All take ``forward_tracks(tiles, counts)``: ``tiles`` ``(n, 1, rows, frames)``
stored track after track, ``counts`` tiles each, and return ``(tracks, classes)`` logits;
``track_outputs(tiles, counts)`` gives those logits and each track's embedding (what similarity
search compares) from the same pass. ``forward(tiles)`` scores each tile as a one-tile track,
which gives scoring its tile scores.

- :class:`TrackLinear` (``linear``): per-track mean and standard deviation of every feature row
  over all frames, standardized, then one logistic unit per class (one-vs-rest logistic
  regression, fitted by scikit-learn; :mod:`training.linear`).
- :class:`TrackKernel` (``kernel``): the same statistics, standardized, then one RBF-kernel
  support vector machine per class (fitted by scikit-learn; :mod:`training.linear`).
- :class:`PooledCNN` (``pooled``): a small CNN embeds each tile; the track's embeddings are
  pooled (mean and max over tiles) and a linear layer gives the logits.
"""

from __future__ import annotations

import torch
from torch import nn

from training.models import Standardize


def track_index(counts: torch.Tensor) -> torch.Tensor:
    """The track of every tile, for tiles stored track after track ``counts`` each."""
    return torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)


def pool_tracks(values: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max over each track's rows of ``values`` ``(n, d)``: two ``(tracks, d)``."""
    index = track_index(counts)
    shape = (len(counts), values.shape[1])
    total = values.new_zeros(shape).index_add_(0, index, values)
    mean = total / counts.to(values.dtype)[:, None]
    high = values.new_full(shape, float("-inf")).scatter_reduce_(
        0, index[:, None].expand_as(values), values, "amax")
    return mean, high


def track_statistics(tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per track, the mean and (population) standard deviation of each feature row over all
    the frames of its tiles: ``(tracks, 2 * rows)``, in float64 (sums over hours of frames)."""
    x = tiles.reshape(len(tiles), tiles.shape[-2], tiles.shape[-1]).double()
    frames = x.shape[-1]
    index = track_index(counts)
    shape = (len(counts), x.shape[1])
    total = x.new_zeros(shape).index_add_(0, index, x.sum(-1))
    squares = x.new_zeros(shape).index_add_(0, index, (x * x).sum(-1))
    n = (counts.double() * frames)[:, None]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0.0).sqrt()
    return torch.cat([mean, std], dim=1)


def unit_rows(values: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit length (rows of zeros stay zeros)."""
    return values / values.norm(dim=1, keepdim=True).clamp_min(1e-12)


#: The weight of the label scores against the statistics in a ``kernel`` model's embedding
#: (both parts unit length). The statistics alone found same-film neighbours no better than
#: plain feature statistics; the scores alone were best on average but worse than them on one
#: of five folds of the game-score corpus; with weight 4 the concatenation was as good on
#: average and never worse than the statistics (docs/similarity.md).
KERNEL_SCORE_WEIGHT = 4.0


def _ones(n: int, device) -> torch.Tensor:
    return torch.ones(n, dtype=torch.long, device=device)


class TrackLinear(nn.Module):
    """Logistic regression on track statistics: ``(stats - center) / scale @ coef.T + bias``.
    The parameters are a fitted scikit-learn ``StandardScaler`` and one-vs-rest
    ``LogisticRegression`` (:func:`training.linear.fit_linear`), so its sigmoid outputs are
    their ``predict_proba``."""

    track_level = True

    def __init__(self, tile_shape: tuple[int, int], n_classes: int):
        super().__init__()
        n = 2 * tile_shape[0]
        self.register_buffer("center", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(n_classes, n, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_classes, dtype=torch.float64))

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the standardized statistics ``z`` (``2 * rows`` values)."""
        z = (track_statistics(tiles, counts) - self.center) / self.scale
        return (z @ self.coef.T + self.bias).float(), z.float()

    def forward_tracks(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.track_outputs(tiles, counts)[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.forward_tracks(tiles, _ones(len(tiles), tiles.device))


class TrackKernel(nn.Module):
    """One-vs-rest RBF support vector machines on track statistics: with ``z`` the standardized
    statistics, ``logit_k = sum_i coef[k, i] * exp(-gamma * |z - support_i|^2) + bias_k``, the
    fitted ``SVC.decision_function`` of each class (:func:`training.linear.kernel_module`)."""

    track_level = True

    def __init__(self, tile_shape: tuple[int, int], n_classes: int, n_support: int = 0):
        super().__init__()
        n = 2 * tile_shape[0]
        self.register_buffer("center", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("support", torch.zeros(n_support, n, dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(n_classes, n_support, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("gamma", torch.ones((), dtype=torch.float64))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # The number of support vectors is the fitted model's: take its shape from the file.
        for name in ("support", "coef"):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the standardized statistics and the label scores (the
        logits' sigmoid), each scaled to unit length, the scores weighted by
        :data:`KERNEL_SCORE_WEIGHT`: ``2 * rows + classes`` values."""
        z = (track_statistics(tiles, counts) - self.center) / self.scale
        kernel = torch.exp(-self.gamma * torch.cdist(z, self.support).square())
        logits = (kernel @ self.coef.T + self.bias).float()
        return logits, torch.cat([unit_rows(z.float()),
                                  KERNEL_SCORE_WEIGHT * unit_rows(logits.sigmoid())], dim=1)

    def forward_tracks(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.track_outputs(tiles, counts)[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.forward_tracks(tiles, _ones(len(tiles), tiles.device))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # Pooling before batch norm and ReLU: they run on a quarter of the values (1.5x faster
    # training on a CPU, benchmarks/README.md).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class PooledCNN(nn.Module):
    """Tile encoder (four 3x3 conv blocks with 2x2 max-pooling and batch norm, then the mean and
    max over what remains of time and frequency: a ``2 * width``-value embedding per tile),
    pooled over a track's tiles (mean and max), dropout, and one linear layer."""

    track_level = True
    embed_chunk = 512

    def __init__(self, tile_shape: tuple[int, int], n_classes: int, width: int = 32,
                 dropout: float = 0.5):
        super().__init__()
        self.standardize = Standardize(tile_shape)
        w = width
        self.encoder = nn.Sequential(_block(1, w // 4), _block(w // 4, w // 2),
                                     _block(w // 2, w), _block(w, w))
        self.embedding_size = 2 * w
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * self.embedding_size,
                                                                 n_classes))

    def embed(self, tiles: torch.Tensor) -> torch.Tensor:
        """``(n, 1, rows, frames)`` tiles to ``(n, embedding_size)`` embeddings."""
        if len(tiles) > self.embed_chunk:  # bounded activations when scoring long tracks
            return torch.cat([self.embed(part) for part in tiles.split(self.embed_chunk)])
        h = self.encoder(self.standardize(tiles))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def pooled(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Per track, the mean and max of its tiles' embeddings."""
        return torch.cat(pool_tracks(self.embed(tiles).float(), counts), dim=1)

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the pooled track embedding (``4 * width`` values)."""
        pooled = self.pooled(tiles, counts)
        return self.head(pooled), pooled

    def forward_tracks(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.track_outputs(tiles, counts)[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.forward_tracks(tiles, _ones(len(tiles), tiles.device))
