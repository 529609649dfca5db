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
- :class:`TrackKernel` (``kernel``): the same statistics and the quantiles
  (:data:`QUANTILES`) of every row, standardized, then one RBF-kernel support vector machine
  per class (fitted by scikit-learn; :mod:`training.linear`). On a log-mel feature set: each
  band's mean and standard deviation, and those statistics with the quantiles of the track's
  cepstra (:data:`CEPSTRA`). Its embedding adds a frame codebook's (:mod:`training.codebook`).
- :class:`PooledCNN` (``pooled``): a small CNN embeds each tile; the track's embeddings are
  pooled (mean and max over tiles) and a linear layer gives the logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from training.codebook import FrameCodebook
from training.models import Standardize, channels_last


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


#: The quantiles of each feature row (over a track's frames) that ``kernel`` adds to its mean
#: and standard deviation: the spread's shape, which two moments miss. On the game-score corpus
#: they raised the kernel model's mean LRAP a little (+0.004 to +0.008 over 15 folds by track,
#: +0.010 by game) though they won only about half of the folds; ``linear`` gained nothing
#: (docs/training.md), so it keeps the two moments.
QUANTILES = (0.1, 0.5, 0.9)


def track_statistics(tiles: torch.Tensor, counts: torch.Tensor,
                     quantiles: tuple[float, ...] = ()) -> torch.Tensor:
    """Per track, the mean and (population) standard deviation of each feature row over all
    the frames of its tiles, then each of ``quantiles`` of it (numpy's ``linear`` method):
    ``(tracks, (2 + len(quantiles)) * rows)``, in float64 (sums over hours of frames)."""
    x = tiles.reshape(len(tiles), tiles.shape[-2], tiles.shape[-1]).double()
    frames = x.shape[-1]
    index = track_index(counts)
    shape = (len(counts), x.shape[1])
    total = x.new_zeros(shape).index_add_(0, index, x.sum(-1))
    squares = x.new_zeros(shape).index_add_(0, index, (x * x).sum(-1))
    n = (counts.double() * frames)[:, None]
    mean = total / n
    std = (squares / n - mean * mean).clamp_min(0.0).sqrt()
    if not quantiles:
        return torch.cat([mean, std], dim=1)
    q = torch.tensor(quantiles, dtype=torch.float64, device=x.device)
    parts = []
    for track in x.split(counts.tolist()):  # rows x all of the track's frames, sorted
        values = track.transpose(0, 1).reshape(x.shape[1], -1).sort(dim=1).values
        at = q * (values.shape[1] - 1)
        lo, hi = at.floor().long(), at.ceil().long()
        parts.append((values[:, lo] + (values[:, hi] - values[:, lo]) * (at - lo)).T.flatten())
    return torch.cat([mean, std, torch.stack(parts)], dim=1)


#: Cepstral coefficients (1 to 40, as the MFCC feature set keeps) whose statistics ``kernel``
#: adds on a log-mel feature set to each band's mean and standard deviation: on the default
#: log-mel spec, the MFCC set's own statistics beside the bands'. On the game-score corpus that
#: ranked above ``kernel`` on the MFCC set in 17 of 30 folds by track, +0.010 LRAP
#: (docs/training.md).
CEPSTRA = 40


def cepstral_basis(rows: int, n: int) -> torch.Tensor:
    """``(n, rows)``: the orthonormal DCT-II's coefficients 1 to ``n`` over ``rows`` log-mel
    bands (``scipy.fft.dct(type=2, norm="ortho")``, what turns log-mel frames into MFCCs), so
    that ``basis @ frames`` are the frames' cepstra without the loudness (coefficient 0)."""
    k = torch.arange(1, n + 1, dtype=torch.float64)[:, None]
    band = torch.arange(rows, dtype=torch.float64)[None]
    return math.sqrt(2.0 / rows) * torch.cos(math.pi * k * (2 * band + 1) / (2 * rows))


@dataclass(frozen=True)
class StatisticsLayout:
    """Which per-track statistics a statistics model is fitted on.

    ``cepstra`` 0: mean, standard deviation and ``quantiles`` of every feature row. ``cepstra``
    n (log-mel tiles): mean and standard deviation of every band, then mean, standard deviation
    and ``quantiles`` of cepstral coefficients 1 to n of every frame."""

    quantiles: tuple[float, ...] = ()
    cepstra: int = 0

    @classmethod
    def for_model(cls, arch: str, kind: str, rows: int) -> StatisticsLayout:
        """What ``arch`` (``linear`` or ``kernel``) is fitted on, for tiles of feature
        ``kind`` with ``rows`` rows: ``linear`` keeps the two moments."""
        if arch != "kernel":
            return cls()
        return cls(QUANTILES, min(CEPSTRA, rows - 1) if kind == "logmel" else 0)

    @classmethod
    def from_size(cls, n_statistics: int, rows: int, cepstra: int = 0) -> StatisticsLayout:
        """The layout of a saved model's ``n_statistics`` (its scaler's size): mean and std
        alone, or with :data:`QUANTILES` (models fitted before quantiles load as such)."""
        for quantiles in ((), QUANTILES):
            if cls(quantiles, cepstra).size(rows) == n_statistics:
                return cls(quantiles, cepstra)
        raise ValueError(f"{n_statistics} statistics do not fit {rows} feature rows"
                         + (f" and {cepstra} cepstra" if cepstra else ""))

    def size(self, rows: int) -> int:
        """The number of statistics for ``rows`` feature rows."""
        per_row = 2 + len(self.quantiles)
        return 2 * rows + per_row * self.cepstra if self.cepstra else per_row * rows

    def of(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """``(tracks, size)`` in float64, from tiles stored track after track, ``counts`` each."""
        if not self.cepstra:
            return track_statistics(tiles, counts, self.quantiles)
        x = tiles.reshape(len(tiles), tiles.shape[-2], tiles.shape[-1]).double()
        basis = cepstral_basis(x.shape[1], self.cepstra).to(x.device)
        return torch.cat([track_statistics(x, counts),
                          track_statistics(torch.matmul(basis, x), counts, self.quantiles)],
                         dim=1)


def unit_rows(values: torch.Tensor) -> torch.Tensor:
    """Each row scaled to unit length (rows of zeros stay zeros)."""
    return values / values.norm(dim=1, keepdim=True).clamp_min(1e-12)


#: The weight of the label scores against the statistics in a ``kernel`` model's embedding
#: (both parts unit length). The statistics alone found same-film neighbours no better than
#: plain feature statistics; the scores alone were best on average but worse than them on one
#: of five folds of the game-score corpus; with weight 4 the concatenation was as good on
#: average and never worse than the statistics (docs/similarity.md).
KERNEL_SCORE_WEIGHT = 4.0

#: The length of a ``kernel`` model's codebook part (:mod:`training.codebook`) against the
#: rest of its embedding: half of it. On the game-score corpus, half found more same-film
#: neighbours than a quarter or three quarters with MFCC tiles, and held with log-mel tiles
#: (docs/similarity.md).
CODEBOOK_WEIGHT = 0.5 * math.sqrt(1.0 + KERNEL_SCORE_WEIGHT ** 2)


class TrackModel(nn.Module):
    """What the track-level models share: ``forward_tracks`` (the logits of the subclass's
    ``track_outputs``) and ``forward`` (each tile scored as a one-tile track)."""

    track_level = True

    def forward_tracks(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.track_outputs(tiles, counts)[0]

    def forward(self, tiles: torch.Tensor) -> torch.Tensor:
        return self.forward_tracks(tiles, torch.ones(len(tiles), dtype=torch.long,
                                                     device=tiles.device))


class StatisticsModel(TrackModel):
    """A model on each track's standardized statistics (``center``, ``scale``: a fitted
    scikit-learn ``StandardScaler``) of a :class:`StatisticsLayout`. A saved model's buffers, and
    so its statistics, take their sizes from its file: models fitted on mean and std alone load
    as such, and files without ``cepstra`` as models without them."""

    def __init__(self, tile_shape: tuple[int, int], layout: StatisticsLayout):
        super().__init__()
        self.rows, self.layout = tile_shape[0], layout
        n = layout.size(self.rows)
        self.register_buffer("center", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("cepstra", torch.tensor(layout.cepstra))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        saved, cepstra = state_dict.get(prefix + "center"), state_dict.get(prefix + "cepstra")
        if saved is not None:
            self.layout = StatisticsLayout.from_size(
                saved.numel(), self.rows, int(cepstra) if cepstra is not None else 0)
            self.cepstra = torch.tensor(self.layout.cepstra)
        for name, _ in self.named_buffers(recurse=False):
            if prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if cepstra is None and prefix + "cepstra" in missing_keys:
            missing_keys.remove(prefix + "cepstra")  # saved before cepstra existed: none

    def standardized(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The tracks' statistics, standardized: ``(tracks, statistics)`` in float64."""
        return (self.layout.of(tiles, counts) - self.center) / self.scale


class TrackLinear(StatisticsModel):
    """Logistic regression on track statistics: ``(stats - center) / scale @ coef.T + bias``.
    The parameters are a fitted scikit-learn ``StandardScaler`` and one-vs-rest
    ``LogisticRegression`` (:func:`training.linear.fit_linear`), so its sigmoid outputs are
    their ``predict_proba``."""

    def __init__(self, tile_shape: tuple[int, int], n_classes: int,
                 layout: StatisticsLayout = StatisticsLayout()):
        super().__init__(tile_shape, layout)
        n = len(self.center)
        self.register_buffer("coef", torch.zeros(n_classes, n, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_classes, dtype=torch.float64))

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the standardized statistics ``z``."""
        z = self.standardized(tiles, counts)
        return (z @ self.coef.T + self.bias).float(), z.float()


class TrackKernel(StatisticsModel):
    """One-vs-rest RBF support vector machines on track statistics: with ``z`` the standardized
    statistics, ``logit_k = sum_i coef[k, i] * exp(-gamma * |z - support_i|^2) + bias_k``, the
    fitted ``SVC.decision_function`` of each class (:func:`training.linear.kernel_module`)."""

    def __init__(self, tile_shape: tuple[int, int], n_classes: int, n_support: int = 0,
                 layout: StatisticsLayout = StatisticsLayout(QUANTILES)):
        super().__init__(tile_shape, layout)
        n = len(self.center)
        self.register_buffer("support", torch.zeros(n_support, n, dtype=torch.float64))
        self.register_buffer("coef", torch.zeros(n_classes, n_support, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros(n_classes, dtype=torch.float64))
        self.register_buffer("gamma", torch.ones((), dtype=torch.float64))
        self.codebook = FrameCodebook(tile_shape[0])

    def _logits(self, z: torch.Tensor) -> torch.Tensor:
        kernel = torch.exp(-self.gamma * torch.cdist(z, self.support).square())
        return (kernel @ self.coef.T + self.bias).float()

    def forward_tracks(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self._logits(self.standardized(tiles, counts))  # no embedding, no codebook

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the standardized statistics and the label scores (the
        logits' sigmoid), each scaled to unit length, the scores weighted by
        :data:`KERNEL_SCORE_WEIGHT`, then the track's codebook embedding weighted by
        :data:`CODEBOOK_WEIGHT` (when the model has a codebook; models saved before codebooks
        have none): statistics plus ``classes`` plus ``codebook.size`` values."""
        z = self.standardized(tiles, counts)
        logits = self._logits(z)
        parts = [unit_rows(z.float()), KERNEL_SCORE_WEIGHT * unit_rows(logits.sigmoid())]
        if self.codebook.fitted:
            parts.append(CODEBOOK_WEIGHT * self.codebook.embed(tiles, counts))
        return logits, torch.cat(parts, dim=1)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    # Pooling before batch norm and ReLU: they run on a quarter of the values (1.5x faster
    # training on a CPU, benchmarks/README.md).
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.MaxPool2d(2),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class PooledCNN(TrackModel):
    """Tile encoder (four 3x3 conv blocks with 2x2 max-pooling and batch norm, then the mean and
    max over what remains of time and frequency: a ``2 * width``-value embedding per tile),
    pooled over a track's tiles (mean and max), dropout, and one linear layer."""

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
        h = self.encoder(channels_last(self.standardize(tiles)))
        return torch.cat([h.mean(dim=(2, 3)), h.amax(dim=(2, 3))], dim=1)

    def pooled(self, tiles: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Per track, the mean and max of its tiles' embeddings."""
        return torch.cat(pool_tracks(self.embed(tiles).float(), counts), dim=1)

    def track_outputs(self, tiles: torch.Tensor,
                      counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits, and as embedding the pooled track embedding (``4 * width`` values)."""
        pooled = self.pooled(tiles, counts)
        return self.head(pooled), pooled
