"""Where a trained model lives in the store, and reading and writing its files.

::

    <store>/models/<name>/config.json        what was trained, how, on what; metrics; complete?
    <store>/models/<name>/split.parquet      catalog, track_id, side (train / val / test)
    <store>/models/<name>/weights/<member>.pt   best weights (state dict, standardization included)
    <store>/models/<name>/checkpoints/<member>.pt  last epoch's state, for resuming
    <store>/models/<name>/history.csv        member, epoch, train_loss, val_loss, lr, tiles/s ...
    <store>/models/<name>/curves.png         training curves
"""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from featurestore import layout
from featurestore.store import Store
from featurestore.urls import atomic_write, join


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
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        atomic_write(self.fs, self.path(*parts), buffer.getvalue())

    def load_torch(self, *parts: str, map_location="cpu"):
        path = self.path(*parts)
        if not self.fs.exists(path):
            return None
        return torch.load(io.BytesIO(self.fs.cat_file(path)), map_location=map_location,
                          weights_only=False)

    def write_frame(self, frame: pd.DataFrame, name: str) -> None:
        if name.endswith(".csv"):
            atomic_write(self.fs, self.path(name), frame.to_csv(index=False).encode())
            return
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
        atomic_write(self.fs, self.path(name), buffer.getvalue())

    def read_frame(self, name: str) -> pd.DataFrame:
        data = io.BytesIO(self.fs.cat_file(self.path(name)))
        return pd.read_csv(data) if name.endswith(".csv") else pq.read_table(data).to_pandas()

    def write_bytes(self, data: bytes, name: str) -> None:
        atomic_write(self.fs, self.path(name), data)
