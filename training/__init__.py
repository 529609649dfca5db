"""Training taggers from the store: splits, class selection, balanced samplers, a lazy tile
loader, the study's models and the training loop. ``train(store, name, config)`` runs it all and
saves the model into the store."""

from training.config import TrainConfig, TrainingError
from training.train import train

__all__ = ["TrainConfig", "TrainingError", "train"]
