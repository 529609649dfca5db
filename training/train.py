"""``train``: from a store's tracks to a trained model saved back into the store."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from featurestore.spec import FeatureSpec
from featurestore.statuses import OK
from featurestore.store import Store
from featurestore.tile_arrays import TileSource, read_tiles
from training.config import LOOP_SETTINGS, STATISTICS_MODELS, USED_BY, TrainConfig, TrainingError
from training.fused import train_ensemble
from training.heap import heap_reuse
from training.inference import resolve_device
from training.loader import BlockShuffleTiles, tile_moments
from training.loop import Checkpointer, fit, predict
from training.memory_budget import budget_bytes, tile_bytes
from training.metrics import held_out_metrics, unmeasurable_label_ap
from training.model_files import CROSS_FITTED, ModelFiles
from training.models import Ensemble, build_model, is_softmax
from training.samplers import (MultiClassSampler, MultiLabelSampler, OneVsRestSampler,
                               TileTable)
from training.selection import (TrackData, check_selection, cross_fitted_scores,
                                fit_track_model, select, track_scores)
from training.split import SIDES, groups_among, holdout_groups, split_tracks
from training.targets import multi_hot, select_classes
from training.track_models import TrackKernel

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
    selection: dict | None = None

    def summary(self) -> str:
        m = self.metrics
        chosen = (f"auto chose {self.arch}: {self.selection['reason']}\n"
                  if self.selection else "")
        # the ensemble's history has a row per member and epoch
        n = int(self.history["epoch"].max()) + 1 if len(self.history) else 0
        epochs = "" if self.arch in STATISTICS_MODELS else f"; {n} epoch{'s' * (n != 1)}"
        return chosen + (f"model {self.name!r} ({self.arch}, {len(self.classes)} classes: "
                f"{', '.join(self.classes)}) on {self.device}{epochs}"
                f"{' (resumed)' if self.resumed else ''}; "
                f"{'validation (no test split)' if m.get('evaluated_on') == 'val' else 'test'}"
                f": track LRAP "
                f"{m.get('track_lrap', float('nan')):.3f}, coverage error "
                f"{m.get('track_coverage_error', float('nan')):.2f} (best "
                f"{m.get('mean_labels', float('nan')):.2f}), tile LRAP "
                f"{m.get('tile_lrap', float('nan')):.3f}{_label_ap(m)}")


def _label_ap(metrics: dict) -> str:
    """The summary's words for the test tracks' mean label average precision."""
    if "track_label_ap" not in metrics:  # a model trained before it was measured
        return ""
    if metrics["track_label_ap"] is None:
        return ", " + unmeasurable_label_ap("test tracks")
    return (f", label AP {metrics['track_label_ap']:.3f} (chance "
            f"{metrics['track_label_ap_chance']:.3f})")


def _unsplittable(side: str, labels: list[str], tracks: pd.DataFrame, targets: np.ndarray,
                  config: TrainConfig) -> str:
    """Why ``side`` has no tiles of ``labels`` (``targets``: their columns), and what to do."""
    unit = f"values of {config.group_by!r}" if config.group_by else "recordings"
    keys = holdout_groups(tracks, config.group_by)
    keys = keys if keys is not None else np.arange(len(tracks))
    counts = ", ".join(f"{label} {len(np.unique(keys[targets[:, i] > 0]))}"
                       for i, label in enumerate(labels))
    leave = ("leave them out of --labels" if config.labels
             else "raise --min-tracks to leave them out, or name --labels")
    return (f"no {side} tiles of {', '.join(labels)}: the split needs a label's tracks in at "
            f"least 2 {unit} (one for training, one for validation) and gets them on every "
            f"side from 3; {unit} with the label: {counts}; {leave}")


#: Where ``auto`` keeps the folds it has measured, with a digest of the tracks and labels
#: they were cut from: an interrupted selection goes on from them.
SELECTION_FOLDS = "selection_folds.json"


def _prepare(files: ModelFiles, config: TrainConfig, fset_hash: str, overwrite: bool) -> bool:
    """Check an existing model of that name; returns whether this run resumes it. One to
    ``overwrite`` is left in place: it is removed once the new request has passed its
    checks."""
    if not files.exists() or overwrite:
        return False
    saved = files.read_config()
    if saved.get("complete"):
        raise TrainingError(f"model {files.name!r} already exists in {files.store.url}; "
                            "choose another name or overwrite it (--overwrite)")
    if saved.get("feature_set") != fset_hash:
        raise TrainingError(
            f"model {files.name!r} was started on feature set {saved.get('feature_set')}, but "
            f"this run asks for feature set {fset_hash} (another spec): the model's input "
            "would not match; --overwrite to start over on this feature set")
    asked = saved.get("requested_config", saved.get("train_config", {}))
    # how often a checkpoint is written changes no result: a resumed run may take another
    changed = sorted(k for k, v in config.to_dict().items()
                     if asked.get(k) != v and k != "checkpoint_seconds")
    if changed:
        raise TrainingError(f"model {files.name!r} is an interrupted run with other settings "
                            f"({', '.join(changed)}); rerun with the same settings to resume, "
                            "or --overwrite to start over")
    # Its defaults must resolve alike here (a run begun on a GPU takes larger batches and draws
    # dropout from one generator, not one per CPU task): its checkpoint would not fit otherwise.
    # Checked before any tile is read. An `auto` run not yet past its selection has none.
    if saved.get("arch") != "auto":
        began = saved.get("train_config", {})
        now = config.resolved(saved["arch"]).to_dict()
        changed = [k for k in LOOP_SETTINGS if saved["arch"] in USED_BY[k]
                   and began.get(k) is not None and now[k] != began[k]]
        if changed:
            then = ", ".join(f"{k} {began[k]} there, {now.get(k)} here" for k in changed)
            raise TrainingError(f"model {files.name!r} is an interrupted run begun on another "
                                f"device, whose defaults resolved otherwise ({then}); resume it "
                                "on that device, or --overwrite to start over")
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


def _explicit_split(tracks: pd.DataFrame, split: pd.DataFrame) -> pd.Series:
    """The sides of ``split`` (catalog, track_id, side) for every row of ``tracks``."""
    bad = sorted(set(split["side"]) - set(SIDES))
    if bad:
        raise TrainingError(f"split sides {', '.join(map(str, bad))}: use {', '.join(SIDES)}")
    side = tracks[["catalog", "track_id"]].merge(split[["catalog", "track_id", "side"]],
                                                 how="left")["side"]
    if side.isna().any():
        raise TrainingError(f"the split leaves {int(side.isna().sum())} usable tracks without "
                            "a side (each needs train, val or test)")
    return pd.Series(side.to_numpy(), index=tracks.index, name="side")


def _check_track_memory(tracks: pd.DataFrame, config: TrainConfig, spec: FeatureSpec,
                        device) -> None:
    """Refuse a track-level run whose tiles do not fit the memory budget (before anything
    is written: an ``overwrite`` keeps the old model)."""
    needed = int(tracks["n_tiles"].sum()) * 4 * int(np.prod(spec.tile_shape))
    budget = budget_bytes(config, device)
    if needed > budget:
        raise TrainingError(f"track-level models keep the tiles in memory: these need "
                            f"{_mib(needed)}, above the memory budget of {_mib(budget)}; "
                            "raise --memory-budget-mb")


def _mib(size: float) -> str:
    mib = size / 2**20
    return f"{mib:,.0f} MiB" if mib >= 10 else f"{mib:.2g} MiB"


def _track_data(source: TileSource, tracks: pd.DataFrame, targets: np.ndarray,
                spec: FeatureSpec, device, groups: np.ndarray | None) -> TrackData:
    """Every usable track's tiles, read once (chunk by chunk) onto the training device, with
    what inner validation holds out together (:func:`holdout_groups` of ``tracks``)."""
    counts = tracks["n_tiles"].to_numpy(np.int64)
    table = TileTable.of(tracks, targets)
    tiles = torch.from_numpy(read_tiles(source, table.index)).to(device)
    return TrackData(tiles, np.cumsum(counts) - counts, counts, targets, spec.kind, groups)


@heap_reuse()  # the whole run: reading tiles, model selection's fits, training
def train(store: Store | str, name: str, config: TrainConfig | None = None, *,
          split: pd.DataFrame | None = None, storage_options: dict | None = None,
          overwrite: bool = False, progress: bool = True, on_epoch=None,
          log=None) -> TrainReport:
    """Train a tagger on the store's built tracks and save it as ``models/<name>``.

    ``config.arch="auto"`` (the default) cross-validates the candidate architectures on the
    training side and trains the best (the report and the model's config say which and why).
    ``split``: a frame of ``catalog, track_id, side`` (train / val / test) to use instead of
    the config's seeded split. Running the same call again after an interruption resumes from
    the last checkpoint; a finished model is never overwritten unless ``overwrite``. Raises
    :class:`TrainingError` for a bad request (unknown labels, too few tracks, a model of that
    name on another feature set).
    """
    requested = config or TrainConfig()
    device = resolve_device(requested.device)  # before anything is read or removed
    refused = requested.refusal()
    if refused:
        raise TrainingError(refused)
    log = log or (lambda msg: print(msg, file=sys.stderr))
    store = store if isinstance(store, Store) else Store(store, storage_options)
    store.check_layout()
    fset = store.feature_set(requested.feature_set)
    files = ModelFiles(store, name)
    resumed = _prepare(files, requested, fset.hash, overwrite)

    tracks = store.tracks(feature_set=fset.hash, status=OK)
    if requested.label_column not in tracks.columns:
        raise TrainingError(f"label column {requested.label_column!r} is not in the catalog "
                            f"(columns: {', '.join(tracks.columns)})")
    classes = select_classes(tracks, requested.label_column, requested.labels,
                             requested.min_tracks)
    targets = multi_hot(tracks, classes, requested.label_column)
    usable = targets.sum(1) > 0  # tracks with none of the classes teach nothing here
    tracks, targets = tracks[usable].reset_index(drop=True), targets[usable]
    if resumed:
        saved = files.read_frame("split.parquet")
        side = tracks[["catalog", "track_id"]].merge(saved, how="left")["side"]
        if side.isna().any():
            raise TrainingError(f"model {name!r}: the store's tracks changed since the "
                                "interrupted run began; --overwrite to start over")
    elif split is not None:
        side = _explicit_split(tracks, split)
    else:
        side = split_tracks(tracks, requested.test_size, requested.val_size, requested.seed,
                            requested.group_by, targets)
    tables = {s: TileTable.of(tracks[side.to_numpy() == s], targets[side.to_numpy() == s])
              for s in SIDES}
    for s in ("train", "val"):
        missing = [i for i, n in enumerate(tables[s].labels.sum(0)) if n == 0]
        if missing:
            raise TrainingError(_unsplittable(s, [classes[i] for i in missing], tracks,
                                              targets[:, missing], requested))
    fitted_whole = sorted(set(STATISTICS_MODELS) & requested.architectures)
    if not len(tables["test"]) and fitted_whole:
        raise TrainingError(
            f"no test tracks (--test-size 0, or a split without them): "
            f"{' and '.join(fitted_whole)} would be fitted on the training and validation "
            "tracks together, so its figures would be of tracks it learned; keep a test split "
            "(scoring ranks the tracks it learned by cross-fitted scores anyway), or name "
            "--arch pooled or a tile model, which is measured on the validation tracks")

    source = TileSource(fset.tiles_url, store.storage_options)
    base = {"name": name, "arch": requested.arch, "classes": classes,
            "label_column": requested.label_column, "feature_set": fset.hash,
            "spec": fset.spec.to_dict(), "tile_shape": list(fset.spec.tile_shape),
            "train_config": requested.to_dict(), "requested_config": requested.to_dict(),
            "softmax": False, "complete": False}
    # the training side: what auto cross-validates, and what a statistics model is fitted on
    fitted = np.flatnonzero(side.to_numpy() != "test")
    held_together = holdout_groups(tracks, requested.group_by)
    groups = groups_among(held_together, fitted)
    takes_tracks = requested.arch == "auto" or requested.track_level
    if takes_tracks:
        _check_track_memory(tracks, requested, fset.spec, device)
    if requested.arch == "auto":
        check_selection(requested.resolved(), fitted, groups)
    if not resumed:
        if overwrite and files.exists():
            files.remove()
        files.write_frame(tracks[["catalog", "track_id"]].assign(side=side.to_numpy()),
                          "split.parquet")
        files.write_config(base)

    data, selection = None, None
    config = requested.resolved()
    if takes_tracks:
        data = _track_data(source, tracks, targets, fset.spec, device, held_together)
    if requested.arch == "auto":
        selection = files.read_json("selection.json") if files.has("selection.json") else None
        if selection is None:
            # Each fold's result is kept as it comes, a rerun after a kill goes on from there;
            # only for the same tracks and labels (the folds are cut from them).
            # the groups too: folds cut by other groups (copies of a recording) are others
            same = hashlib.sha256(pd.util.hash_pandas_object(
                tracks.iloc[fitted][["catalog", "track_id"]], index=False).to_numpy().tobytes()
                + targets[fitted].tobytes()
                + ("\n".join(groups).encode() if groups is not None else b"")).hexdigest()
            kept = files.read_json(SELECTION_FOLDS) if files.has(SELECTION_FOLDS) else {}
            selection = select(
                config, data, fitted, groups, log,
                kept.get("candidates") if kept.get("tracks") == same else None,
                lambda done: files.write_json({"tracks": same, "candidates": done},
                                              SELECTION_FOLDS), progress)
            files.write_json(selection, "selection.json")
        config = requested.resolved(selection["best"])
    base.update(arch=config.arch, train_config=config.to_dict(),
                softmax=is_softmax(config.arch), **({"selection": selection} if selection
                                                    else {}))
    files.write_config(base)
    chosen = " (chosen by auto)" if selection else ""
    log(f"training {config.arch}{chosen} {name!r} on {device}: {len(classes)} classes, "
        f"{len(tables['train'])}/{len(tables['val'])}/{len(tables['test'])} train/val/test "
        f"tiles from {len(tracks)} tracks of feature set {fset.hash} ({fset.spec.kind}, "
        f"{fset.spec.tile_shape[0]} rows)")
    test = "test" if len(tables["test"]) else "val"
    if config.track_level:
        model, history, members, metrics = _train_tracks(
            files, config, data, side.to_numpy(), tables[test], test, progress, on_epoch)
        if config.arch in STATISTICS_MODELS:
            scores = cross_fitted_scores(config, data, fitted, history[-1]["C"], groups)
            files.write_frame(tracks.iloc[fitted][["catalog", "track_id", "content_hash"]]
                              .assign(scores=list(scores)), CROSS_FITTED)
    else:
        model, history, members, metrics = _train_tiles(
            files, config, source, tables, fset, test, device, progress, on_epoch, log)
    metrics["evaluated_on"] = test
    if isinstance(model, TrackKernel) and model.codebook.fitted:
        base["codebook"] = {"words": len(model.codebook.words), "size": int(model.codebook.size)}
    frame = pd.DataFrame(history)
    files.write_frame(frame, "history.csv")
    files.write_bytes(_curves_png(frame), "curves.png")
    files.write_config({**base, "complete": True, "metrics": metrics, "device": str(device),
                        "members": members, "weights_sha256": files.weights_digest(members)})
    return TrainReport(name, config.arch, classes, str(device), frame, metrics, resumed,
                       selection)


def _train_tracks(files: ModelFiles, config: TrainConfig, data: TrackData, side: np.ndarray,
                  test: TileTable, test_side: str, progress: bool, on_epoch):
    """Fit a track-level model on the training tracks (validation tracks for its choices),
    save it, and measure it on the test tracks."""
    checkpoint = Checkpointer(
        save=lambda state: files.save_torch(state, "checkpoints", "model.pt"),
        load=lambda: files.load_torch("checkpoints", "model.pt"))
    model, history = fit_track_model(config, data, np.flatnonzero(side == "train"),
                                     np.flatnonzero(side == "val"), checkpoint,
                                     progress=progress, on_epoch=on_epoch)
    if isinstance(model, TrackKernel):  # its embedding's codebook, on what the model saw
        started = time.perf_counter()
        model.codebook.fit(data.tiles_of(np.flatnonzero(side != "test")), seed=config.seed)
        history[-1]["codebook_seconds"] = time.perf_counter() - started
    files.save_torch(model.state_dict(), "weights", "model.pt")
    rows = np.flatnonzero(side == test_side)
    per_track = track_scores(model, data, rows, config)
    with torch.no_grad():
        per_tile = torch.sigmoid(model(data.tiles_of(rows)[:, None])).cpu().numpy()
    return model, history, ["model"], held_out_metrics(per_tile, test, per_track)


def _train_tiles(files: ModelFiles, config: TrainConfig, source: TileSource,
                 tables: dict[str, TileTable], fset, test_side: str, device, progress: bool,
                 on_epoch, log):
    """The study's tile models: trained on tiles, a track scored by the mean of its tiles."""
    datasets = {s: BlockShuffleTiles(source, config.batch_size, config.buffer_chunks,
                                     shuffle=(s == "train"), seed=config.seed)
                for s in SIDES}
    needed = np.concatenate([t.index for t in tables.values()])
    size = tile_bytes(fset.spec.tile_shape, config, device)
    if len(np.unique(needed)) * size <= budget_bytes(config, device):
        datasets["train"].preload(needed)  # fits the budget: read once, serve from memory
        for s in ("val", "test"):
            datasets[s].memory = datasets["train"].memory
        log("tiles in memory")
    moments = tile_moments(source, tables["train"].index, datasets["train"].memory)

    torch.manual_seed(config.seed)  # the initial weights are part of what a seed fixes
    model = build_model(config.arch, fset.spec.tile_shape, len(tables["train"].targets[0]),
                        config.dense_units, config.dropout)
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    for net in nets:
        net.standardize.set(moments.mean, moments.std)
    history: list[dict] = []
    softmax = is_softmax(config.arch)
    ensemble = isinstance(model, Ensemble)
    members = [f"member-{k:02d}" for k in range(len(nets))] if ensemble else ["model"]
    classes = files.read_config()["classes"]
    # every member in the same steps, on the in-memory tiles (its optimizer has no weight decay)
    together = (ensemble and datasets["train"].memory is not None
                and config.optimizer in ("sgd", "adam") and not config.weight_decay)
    if together:
        history += train_ensemble(model, tables, datasets["train"].memory, classes, config,
                                  device, files, members, progress, on_epoch)
    for k, (net, key) in enumerate([] if together else zip(nets, members)):
        member = classes[k] if ensemble else config.arch
        if ensemble:
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

    test = tables[test_side]
    scores = predict(model, datasets[test_side], test.index, softmax, device, config)
    return model, history, members, held_out_metrics(scores, test)
