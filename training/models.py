"""The study's models in torch, named as in its table (docs/training.md lists their layers).

Every model takes ``(batch, 1, coefficients, frames)`` float32 tiles and returns logits: softmax
(``dnn``, ``cnn``) or sigmoid (``member``, ``multilabel``, ``ensemble``) is applied by the loss and
at scoring. A :class:`Standardize` front holds the training set's per-value mean and standard
deviation, so a saved model carries its own standardization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Standardize(nn.Module):
    """``(x - mean) / std`` per value, with the statistics saved in the state dict."""

    def __init__(self, shape: tuple[int, int]):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("std", torch.ones(shape))

    def set(self, mean, std) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` in channels-last strides, a one-channel tensor included.

    A one-channel tensor is contiguous in both layouts (``.contiguous(memory_format=...)``
    leaves it as it is), and a convolution given one picks the classic layout, for its output
    and for every layer after it. Given channel stride 1 it runs channels-last throughout, the
    layout oneDNN's convolutions and pooling run fastest in: the ensemble's CPU training step
    took 1.5x less CPU time (``benchmarks/gpu_training.py``)."""
    if x.shape[1] == 1:
        return x[:, 0].unsqueeze(-1).permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last)


def same_pad(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """``x`` ``(B, C, H, W)`` zero-padded for a "same" convolution of ``kernel`` (even kernels
    pad one more on the right and bottom, as Keras), channels-last (:func:`channels_last`)."""
    before, after = (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2
    return channels_last(F.pad(x, (before, after, before, after)))


class SamePad2d(nn.Module):
    """:func:`same_pad` as a layer (no weights)."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = kernel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return same_pad(x, self.kernel)


def _conv_block(c_in: int, c_out: int, kernel: int, dropout: float) -> nn.Sequential:
    # Max-pool before ReLU: the same function (ReLU is monotonic) on a quarter of the values.
    return nn.Sequential(SamePad2d(kernel), nn.Conv2d(c_in, c_out, kernel), nn.MaxPool2d(2),
                         nn.ReLU(), nn.Dropout(dropout))


def _pooled(size: int, n_pools: int) -> int:
    for _ in range(n_pools):
        size //= 2
    return size


class Tagger(nn.Module):
    """Standardization, a feature stack, and a dense head of two layers of ``dense`` units."""

    def __init__(self, tile_shape: tuple[int, int], features: nn.Module, n_features: int,
                 n_outputs: int, dense: int, head_dropout: tuple[float, float]):
        super().__init__()
        self.standardize = Standardize(tile_shape)
        self.features = features
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(head_dropout[0]), nn.Linear(n_features, dense), nn.ReLU(),
            nn.Dropout(head_dropout[1]), nn.Linear(dense, dense), nn.ReLU(),
            nn.Linear(dense, n_outputs))

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits and the last hidden layer (the second dense layer after its ReLU,
        ``dense`` values a tile: what scoring averages into a track embedding), from one
        pass."""
        hidden = self.head[:-1](self.features(self.standardize(x)))
        return self.head[-1](hidden), hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outputs(x)[0]


def dnn(tile_shape: tuple[int, int], n_classes: int, dense: int = 50,
        dropout: tuple[float, ...] = (0.2, 0.5)) -> Tagger:
    """2-layer DNN: 1 x 4000 input, dense 50 (dropout 0.2 before, 0.5 after), dense 50, softmax."""
    h, w = tile_shape
    return Tagger(tile_shape, nn.Identity(), h * w, n_classes, dense, tuple(dropout[:2]))


def cnn(tile_shape: tuple[int, int], n_classes: int, dense: int = 50,
        dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)) -> Tagger:
    """6-layer CNN: conv 32@5x5, 64@3x3, 128@2x2, 256@2x2 (each max-pool 2x2 and dropout
    0.1-0.4), dense 50 (dropout 0.5), dense 50, one output per class."""
    h, w = tile_shape
    features = nn.Sequential(
        _conv_block(1, 32, 5, dropout[0]), _conv_block(32, 64, 3, dropout[1]),
        _conv_block(64, 128, 2, dropout[2]), _conv_block(128, 256, 2, dropout[3]))
    n = 256 * _pooled(h, 4) * _pooled(w, 4)
    return Tagger(tile_shape, features, n, n_classes, dense, (0.0, dropout[4]))


def member(tile_shape: tuple[int, int], dense: int = 50,
           dropout: tuple[float, ...] = (0.1, 0.2, 0.3, 0.5)) -> Tagger:
    """Ensemble member: conv 32@3x3, 64@2x2, 128@2x2 (max-pool 2x2, dropout 0.1-0.3), dense 50
    (dropout 0.5), dense 50, one sigmoid output."""
    h, w = tile_shape
    features = nn.Sequential(
        _conv_block(1, 32, 3, dropout[0]), _conv_block(32, 64, 2, dropout[1]),
        _conv_block(64, 128, 2, dropout[2]))
    n = 128 * _pooled(h, 3) * _pooled(w, 3)
    return Tagger(tile_shape, features, n, 1, dense, (0.0, dropout[3]))


class Ensemble(nn.Module):
    """One-vs-rest binary members, one per class; outputs one logit per class."""

    def __init__(self, members: list[Tagger]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One logit per class, and the members' last hidden layers side by side
        (``members * dense`` values a tile, member 0's first)."""
        parts = [m.outputs(x) for m in self.members]
        return (torch.cat([logits for logits, _ in parts], dim=1),
                torch.cat([hidden for _, hidden in parts], dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([m(x) for m in self.members], dim=1)


def build_model(arch: str, tile_shape: tuple[int, int], n_classes: int, dense: int = 50,
                dropout: tuple[float, ...] = (), width: int = 32) -> nn.Module:
    """The model of ``arch``: ``dnn``, ``cnn``, ``multilabel`` (the CNN with a sigmoid per
    class), ``ensemble`` (``n_classes`` members), or the track-level ``linear``, ``kernel`` and
    ``pooled``
    (:mod:`training.track_models`; ``width``: the pooled CNN's channels)."""
    from training.track_models import PooledCNN, TrackKernel, TrackLinear  # they use this one

    if arch == "linear":
        return TrackLinear(tile_shape, n_classes)
    if arch == "kernel":
        return TrackKernel(tile_shape, n_classes)
    if arch == "pooled":
        return PooledCNN(tile_shape, n_classes, width)
    kw = {"dense": dense, **({"dropout": dropout} if dropout else {})}
    if arch == "dnn":
        return dnn(tile_shape, n_classes, **kw)
    if arch in ("cnn", "multilabel"):
        return cnn(tile_shape, n_classes, **kw)
    if arch == "ensemble":
        return Ensemble([member(tile_shape, **kw) for _ in range(n_classes)])
    raise ValueError(f"unknown architecture {arch!r}")


def is_softmax(arch: str) -> bool:
    """Whether the architecture's scores are a softmax over classes (else sigmoids)."""
    return arch in ("dnn", "cnn")
