"""The training configuration: every choice a run makes, saved with the model."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

ARCHITECTURES = ("dnn", "cnn", "ensemble", "multilabel")
BALANCING = ("equal", "weights", "oversample", "none")


class TrainingError(ValueError):
    """A training request that cannot be honoured (bad option, mismatched store, no data)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Defaults are the reference study's where it gives one.

    ``labels``: explicit classes, else every label with at least ``min_tracks`` tracks, from the
    ``label_column``. Splits are by track (or by ``group_by``, e.g. ``film``), seeded.
    ``balance``: ``equal`` tiles per class each epoch (the study's scheme; for the ensemble, all
    positives and a fresh equal-sized uniform sample of negatives per member and epoch),
    ``weights`` (class-weighted loss over all tiles), ``oversample`` (every class drawn up to the
    largest), ``none``. ``checkpoint_seconds``: how often the fused ensemble saves its state
    for resuming (and once at the end).
    """

    arch: str = "cnn"
    labels: tuple[str, ...] = ()
    min_tracks: int = 20
    label_column: str = "genres"
    test_size: float = 0.1
    val_size: float = 0.2
    group_by: str | None = None
    seed: int = 0
    balance: str = "equal"
    epochs: int = 200
    patience: int = 20
    batch_size: int = 128
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.9
    lr_decay: str = "linear"
    dense_units: int = 50
    dropout: tuple[float, ...] = ()
    device: str = "auto"
    mixed_precision: bool = True
    loader_workers: int = 0
    memory_budget_mb: float = 1024.0
    buffer_chunks: int = 8
    checkpoint_seconds: float = 30.0
    feature_set: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise TrainingError(f"arch {self.arch!r}: choose one of {', '.join(ARCHITECTURES)}")
        if self.balance not in BALANCING:
            raise TrainingError(f"balance {self.balance!r}: choose one of {', '.join(BALANCING)}")
        if self.optimizer not in ("sgd", "adam"):
            raise TrainingError(f"optimizer {self.optimizer!r}: choose sgd or adam")
        if not (0 <= self.test_size < 1 and 0 < self.val_size < 1):
            raise TrainingError("test_size must be in [0, 1) and val_size in (0, 1)")
        if self.epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise TrainingError("epochs, patience and batch_size must be positive")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"], out["dropout"] = list(self.labels), list(self.dropout)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        data["labels"] = tuple(data.get("labels", ()))
        data["dropout"] = tuple(data.get("dropout", ()))
        return cls(**data)
