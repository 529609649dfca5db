"""Training taggers from the store: splits, class selection, balanced samplers, a lazy tile
loader, the study's models and the training loop. ``train(store, name, config)`` runs it all and
saves the model into the store (imported on first use: torch loads only then)."""

from featurestore.lazy import export_lazily
from training.config import TrainConfig, TrainingError

__all__ = ["TrainConfig", "TrainingError", "train"]

export_lazily(__name__, {"train": "training.train"})
