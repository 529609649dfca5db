"""Where a trained model lives in the store (``<store>/models/<name>/``: config, split,
weights, checkpoints, history, curves; docs/store-format.md describes each file), and reading
and writing its files."""

from __future__ import annotations

import hashlib
import io
import json

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from featurestore import layout
from featurestore.parquet_files import parquet_bytes, read_parquet
from featurestore.store import Store
from featurestore.urls import atomic_write, join
from training.config import TrainConfig, TrainingError

if TYPE_CHECKING:
    from torch import nn

#: The cross-fitted scores of a statistics model's training tracks: ``catalog``, ``track_id``,
#: ``content_hash`` (the audio they were fitted on) and ``scores`` (one per class).
CROSS_FITTED = "cross_fitted.parquet"


class ModelFiles:
    """The files of model ``name`` in ``store``."""

    def __init__(self, store: Store, name: str):
        self.store, self.name = store, layout.check_name("model", name)
        self.fs = store.fs
        self.dir = layout.model_dir(store.root, name)

    def path(self, *parts: str) -> str:
        return join(self.dir, *parts)

    def exists(self) -> bool:
        return self.fs.exists(self.path("config.json"))

    def remove(self) -> None:
        if self.fs.exists(self.dir):
            self.fs.rm(self.dir, recursive=True)

    def read_config(self) -> dict:
        return json.loads(self.fs.cat_file(self.path("config.json")))

    def write_config(self, config: dict) -> None:
        atomic_write(self.fs, self.path("config.json"),
                     json.dumps(config, indent=2, default=str).encode())

    def save_torch(self, obj, *parts: str) -> None:
        import torch  # here: a model's config, version and split are read without torch

        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write(self.fs, self.path(*parts), buffer.getvalue())

    def load_torch(self, *parts: str, map_location="cpu"):
        import torch

        path = self.path(*parts)
        if not self.fs.exists(path):
            return None
        return torch.load(io.BytesIO(self.fs.cat_file(path)), map_location=map_location,
                          weights_only=False)

    def write_frame(self, frame: pd.DataFrame, name: str) -> None:
        if name.endswith(".csv"):
            atomic_write(self.fs, self.path(name), frame.to_csv(index=False).encode())
            return
        atomic_write(self.fs, self.path(name), parquet_bytes(frame))

    def read_frame(self, name: str) -> pd.DataFrame:
        if name.endswith(".csv"):
            return pd.read_csv(io.BytesIO(self.fs.cat_file(self.path(name))))
        return read_parquet(self.fs, self.path(name)).to_pandas()

    def has(self, name: str) -> bool:
        return self.fs.exists(self.path(name))

    def read_json(self, name: str) -> dict:
        return json.loads(self.fs.cat_file(self.path(name)))

    def write_json(self, data: dict, name: str) -> None:
        atomic_write(self.fs, self.path(name), json.dumps(data, indent=2).encode())

    def write_bytes(self, data: bytes, name: str) -> None:
        atomic_write(self.fs, self.path(name), data)

    def cross_fitted_scores(self) -> dict[str, np.ndarray]:
        """``{content_hash: class probabilities}`` of the audio a statistics model was fitted
        on, each from a model fitted without it (:data:`CROSS_FITTED`); empty for other models
        and for models saved before it. Keyed by the audio, not the track: a copy of a fitted
        recording under another key (another catalog, added since) is audio the model learned
        too, and ranks by the same scores."""
        if not self.has(CROSS_FITTED):
            return {}
        frame = self.read_frame(CROSS_FITTED)
        # copies of one recording are cross-fitted in one fold: their scores are the same
        return {content: np.asarray(scores, dtype=np.float32)
                for content, scores in zip(frame["content_hash"], frame["scores"])}

    def read_complete_config(self) -> dict:
        """The config of a finished model; a clear error for a missing or unfinished one."""
        if not self.exists():
            raise self._missing()
        config = self.read_config()
        if not config.get("complete"):
            raise TrainingError(f"model {self.name!r} has not finished training: rerun its "
                                "`featurestore train` command to complete it")
        return config

    def _missing(self) -> TrainingError:
        """The error for a model this store does not hold, naming those it does."""
        models = layout.models_dir(self.store.root)
        names = [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(models, detail=False)
                 ] if self.fs.exists(models) else []
        return TrainingError(f"no model {self.name!r} in {self.store.url} (models: "
                             f"{', '.join(sorted(names)) or 'none'})")

    def weights_digest(self, members: list[str]) -> str:
        """SHA-256 of the members' saved weights, in order."""
        digest = hashlib.sha256()
        for key in members:
            digest.update(self.fs.cat_file(self.path("weights", f"{key}.pt")))
        return digest.hexdigest()

    def version(self) -> str:
        """The model's version: a hash of its config, which records the digest of its weights
        (so a model trained again under the same name is a new version). Reads the config
        only; a model saved without the digest hashes its weight files too."""
        try:
            data = self.fs.cat_file(self.path("config.json"))
        except FileNotFoundError:
            raise self._missing() from None
        digest = hashlib.sha256(data)
        config = json.loads(data)
        if "weights_sha256" not in config:
            digest.update(bytes.fromhex(self.weights_digest(config.get("members", []))))
        return digest.hexdigest()[:16]

    def load_model(self, config: dict | None = None) -> nn.Module:
        """The finished model with its best weights, in eval mode, on the CPU."""
        from training.models import Ensemble, build_model

        config = config or self.read_complete_config()
        train_config = TrainConfig.from_dict(config["train_config"])
        model = build_model(config["arch"], tuple(config["tile_shape"]), len(config["classes"]),
                            train_config.dense_units, train_config.dropout, train_config.width)
        nets = list(model.members) if isinstance(model, Ensemble) else [model]
        for net, key in zip(nets, config["members"], strict=True):
            net.load_state_dict(self.load_torch("weights", f"{key}.pt"))
        return model.eval()


def list_models(store: Store) -> pd.DataFrame:
    """Every model in ``store``, one row each, settings and test metrics side by side:
    name, arch (and what ``auto`` chose it over), feature set and kind, classes, the split's
    track counts, test track LRAP and coverage error (with its bound), tile LRAP, the mean over
    labels of each label's average precision ranking the test tracks (and a random order's),
    the epoch limit, the settings that differ between architectures, and whether training
    finished."""
    root = layout.models_dir(store.root)
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(root, detail=False)) \
        if store.fs.exists(root) else []
    rows = []
    for name in names:
        files = ModelFiles(store, name)
        if not files.exists():
            continue
        config = files.read_config()
        settings = config.get("train_config", {})
        metrics = config.get("metrics", {})
        selection = config.get("selection") or {}
        chose = selection.get("candidates", {})
        rows.append({
            "name": name, "arch": config.get("arch"),
            "selected_by": ("auto: " + ", ".join(f"{a} {c['mean']:.3f}" for a, c in
                                                  chose.items())) if chose else "",
            "feature_set": config.get("feature_set"),
            "kind": config.get("spec", {}).get("kind", "mfcc"),
            "classes": len(config.get("classes", [])),
            "test_tracks": metrics.get("test_tracks"),
            "track_lrap": metrics.get("track_lrap"),
            "track_coverage": metrics.get("track_coverage_error"),
            "coverage_bound": metrics.get("mean_labels"),
            "tile_lrap": metrics.get("tile_lrap"),
            "label_ap": metrics.get("track_label_ap"),
            "label_ap_chance": metrics.get("track_label_ap_chance"),
            "optimizer": settings.get("optimizer"), "learning_rate": settings.get("learning_rate"),
            "epochs": settings.get("epochs"), "seed": settings.get("seed"),
            "group_by": settings.get("group_by"), "device": config.get("device"),
            "complete": bool(config.get("complete")),
        })
    return pd.DataFrame(rows, columns=["name", "arch", "selected_by", "feature_set", "kind",
                                       "classes", "test_tracks", "track_lrap",
                                       "track_coverage", "coverage_bound", "tile_lrap",
                                       "label_ap", "label_ap_chance", "optimizer",
                                       "learning_rate", "epochs", "seed", "group_by", "device",
                                       "complete"])
