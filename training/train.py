"""``train``: from a store's tracks to a trained model saved back into the store."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import coverage_error, label_ranking_average_precision_score

from featurestore.errors import OK
from featurestore.store import Store
from training.config import TrainConfig, TrainingError
from training.fused import train_ensemble
from training.loader import BlockShuffleTiles, TileSource, tile_moments
from training.loop import Checkpointer, fit, predict, resolve_device
from training.model_files import ModelFiles
from training.models import Ensemble, build_model, is_softmax
from training.samplers import (MultiClassSampler, MultiLabelSampler, OneVsRestSampler,
                               TileTable)
from training.split import split_tracks
from training.targets import multi_hot, select_classes

@dataclass
class TrainReport:
    """What a run produced: the model's name, classes, device, history and test metrics."""

    name: str
    arch: str
    classes: list[str]
    device: str
    history: pd.DataFrame
    metrics: dict = field(default_factory=dict)
    resumed: bool = False

    def summary(self) -> str:
        m = self.metrics
        return (f"model {self.name!r} ({self.arch}, {len(self.classes)} classes: "
                f"{', '.join(self.classes)}) on {self.device}; {len(self.history)} epochs"
                f"{' (resumed)' if self.resumed else ''}; test: track LRAP "
                f"{m.get('track_lrap', float('nan')):.3f}, coverage error "
                f"{m.get('track_coverage_error', float('nan')):.2f} (best "
                f"{m.get('mean_labels', float('nan')):.2f}), tile LRAP "
                f"{m.get('tile_lrap', float('nan')):.3f}")


def _prepare(files: ModelFiles, config: TrainConfig, fset_hash: str, overwrite: bool) -> bool:
    """Check an existing model of that name; returns whether this run resumes it."""
    if not files.exists():
        return False
    if overwrite:
        files.remove()
        return False
    saved = files.read_config()
    if saved.get("complete"):
        raise TrainingError(f"model {files.name!r} already exists in {files.store.url}; "
                            "choose another name or overwrite it (--overwrite)")
    if saved.get("feature_set") != fset_hash:
        raise TrainingError(
            f"model {files.name!r} was started on feature set {saved.get('feature_set')}, but "
            f"the store's feature set is {fset_hash} (another spec): the model's input "
            "would not match; --overwrite to start over on this feature set")
    if saved.get("train_config") != config.to_dict():
        changed = sorted(k for k, v in config.to_dict().items()
                         if saved.get("train_config", {}).get(k) != v)
        raise TrainingError(f"model {files.name!r} is an interrupted run with other settings "
                            f"({', '.join(changed)}); rerun with the same settings to resume, "
                            "or --overwrite to start over")
    return True


def _curves_png(history: pd.DataFrame) -> bytes:
    from catalogs.plots import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(8, 4.5))
    for member, rows in history.groupby("member", sort=False):
        line = ax.plot(rows["epoch"] + 1, rows["train_loss"], label=f"{member} train")[0]
        ax.plot(rows["epoch"] + 1, rows["val_loss"], "--", color=line.get_color(),
                label=f"{member} validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if history["member"].nunique() <= 6:
        ax.legend(fontsize=7)
    return save_figure(fig)


def test_metrics(scores: np.ndarray, table: TileTable) -> dict:
    """Tile- and track-level LRAP and coverage error (track scores: the mean of its tiles)."""
    truth = table.labels
    keep = truth.sum(1) > 0
    tracks = pd.DataFrame(scores).groupby(table.track).mean()
    track_truth = table.targets[tracks.index.to_numpy()]
    return {"tile_lrap": float(label_ranking_average_precision_score(truth[keep], scores[keep])),
            "tile_coverage_error": float(coverage_error(truth[keep], scores[keep])),
            "track_lrap": float(label_ranking_average_precision_score(track_truth,
                                                                      tracks.to_numpy())),
            "track_coverage_error": float(coverage_error(track_truth, tracks.to_numpy())),
            "mean_labels": float(track_truth.sum(1).mean()),
            "test_tracks": len(tracks), "test_tiles": len(table)}


def train(store: Store | str, name: str, config: TrainConfig | None = None, *,
          storage_options: dict | None = None, overwrite: bool = False, progress: bool = True,
          on_epoch=None, log=None) -> TrainReport:
    """Train a tagger on the store's built tracks and save it as ``models/<name>``.

    Running the same call again after an interruption resumes from the last checkpoint; a
    finished model is never overwritten unless ``overwrite``. Raises :class:`TrainingError` for
    a bad request (unknown labels, too few tracks, a model of that name on another feature set).
    """
    config = config or TrainConfig()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    store = store if isinstance(store, Store) else Store(store, storage_options)
    store.check_layout()
    fset = store.feature_set(config.feature_set)
    files = ModelFiles(store, name)
    resumed = _prepare(files, config, fset.hash, overwrite)

    tracks = store.tracks(feature_set=fset.hash, status=OK)
    if config.label_column not in tracks.columns:
        raise TrainingError(f"label column {config.label_column!r} is not in the catalog "
                            f"(columns: {', '.join(tracks.columns)})")
    classes = select_classes(tracks, config.label_column, config.labels, config.min_tracks)
    targets = multi_hot(tracks, classes, config.label_column)
    usable = targets.sum(1) > 0  # tracks with none of the classes teach nothing here
    tracks, targets = tracks[usable].reset_index(drop=True), targets[usable]
    if resumed:
        saved = files.read_frame("split.parquet")
        side = tracks[["catalog", "track_id"]].merge(saved, how="left")["side"]
        if side.isna().any():
            raise TrainingError(f"model {name!r}: the store's tracks changed since the "
                                "interrupted run began; --overwrite to start over")
    else:
        side = split_tracks(tracks, config.test_size, config.val_size, config.seed,
                            config.group_by, targets)
    tables = {s: TileTable.of(tracks[side.to_numpy() == s], targets[side.to_numpy() == s])
              for s in ("train", "val", "test")}
    for s in ("train", "val"):
        missing = [c for c, n in zip(classes, tables[s].labels.sum(0)) if n == 0]
        if missing:
            raise TrainingError(f"no {s} tiles of {', '.join(missing)}: too few tracks (or "
                                "groups) of that class to split; raise --min-tracks or name "
                                "--labels")

    device = resolve_device(config.device)
    source = TileSource(fset.tiles_url, store.storage_options)
    datasets = {s: BlockShuffleTiles(source, config.batch_size, config.buffer_chunks,
                                     shuffle=(s == "train"), seed=config.seed)
                for s in ("train", "val", "test")}
    needed = np.concatenate([t.index for t in tables.values()])
    tile_bytes = 4 * int(np.prod(fset.spec.tile_shape))
    if len(np.unique(needed)) * tile_bytes <= config.memory_budget_mb * 2**20:
        datasets["train"].preload(needed)  # fits the budget: read once, serve from memory
        for s in ("val", "test"):
            datasets[s].memory = datasets["train"].memory
    moments = tile_moments(source, tables["train"].index, datasets["train"].memory)
    log(f"training {config.arch} {name!r} on {device}: {len(classes)} classes, "
        f"{len(tables['train'])}/{len(tables['val'])}/{len(tables['test'])} train/val/test "
        f"tiles from {len(tracks)} tracks"
        f"{', tiles in memory' if datasets['train'].memory is not None else ''}")

    base = {"name": name, "arch": config.arch, "classes": classes,
            "label_column": config.label_column, "feature_set": fset.hash,
            "spec": fset.spec.to_dict(), "tile_shape": list(fset.spec.tile_shape),
            "train_config": config.to_dict(), "softmax": is_softmax(config.arch),
            "complete": False}
    if not resumed:
        split = tracks[["catalog", "track_id"]].assign(side=side.to_numpy())
        files.write_frame(split, "split.parquet")
        files.write_config(base)

    torch.manual_seed(config.seed)  # the initial weights are part of what a seed fixes
    model = build_model(config.arch, fset.spec.tile_shape, len(classes), config.dense_units,
                        config.dropout)
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    for net in nets:
        net.standardize.set(moments.mean, moments.std)
    history: list[dict] = []
    softmax = is_softmax(config.arch)
    members = ([f"member-{k:02d}" for k in range(len(nets))] if isinstance(model, Ensemble)
               else ["model"])  # the weight files' names
    together = isinstance(model, Ensemble) and datasets["train"].memory is not None
    if together:  # every member in the same steps, on the in-memory tiles
        history += train_ensemble(model, tables, datasets["train"].memory, classes, config,
                                  device, files, members, progress, on_epoch)
    for k, (net, key) in enumerate([] if together else zip(nets, members)):
        member = classes[k] if isinstance(model, Ensemble) else config.arch
        if isinstance(model, Ensemble):
            sampler = OneVsRestSampler(tables["train"], k, config.balance, config.seed + k)
            val_plan = OneVsRestSampler(tables["val"], k, "equal", config.seed).epoch(0)
        elif softmax:
            sampler = MultiClassSampler(tables["train"], config.balance, config.seed)
            val_plan = MultiClassSampler(tables["val"], "none", config.seed).epoch(0)
        else:
            sampler = MultiLabelSampler(tables["train"], config.balance, config.seed)
            val_plan = MultiLabelSampler(tables["val"], "none", config.seed).epoch(0)
        datasets["val"].set_plan(*val_plan)
        checkpoint = Checkpointer(
            save=lambda state, key=key: files.save_torch(state, "checkpoints", f"{key}.pt"),
            load=lambda key=key: files.load_torch("checkpoints", f"{key}.pt"))
        history += fit(net, sampler, datasets["train"], datasets["val"], softmax, config,
                       device, checkpoint, label=member, progress=progress, on_epoch=on_epoch)
        files.save_torch(net.state_dict(), "weights", f"{key}.pt")

    test = tables["test"] if len(tables["test"]) else tables["val"]
    scores = predict(model, datasets["test"], test.index, softmax, device, config)
    metrics = test_metrics(scores, test)
    metrics["evaluated_on"] = "test" if len(tables["test"]) else "val"
    frame = pd.DataFrame(history)
    files.write_frame(frame, "history.csv")
    files.write_bytes(_curves_png(frame), "curves.png")
    files.write_config({**base, "complete": True, "metrics": metrics, "device": str(device),
                        "members": members, "weights_sha256": files.weights_digest(members)})
    return TrainReport(name, config.arch, classes, str(device), frame, metrics, resumed)
