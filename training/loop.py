"""The training loop of one network: epochs of sampled tiles, validation, early stopping, the
best weights kept, a checkpoint at most every ``checkpoint_seconds`` (after the epoch that
passes it) and at the end, so that an interrupted run resumes where it was."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from training.config import TrainConfig
from training.device_feed import to_device
from training.inference import autocast, place, probabilities
from training.loader import BlockShuffleTiles, make_loader


def make_loss(softmax: bool, weights: torch.Tensor | None) -> nn.Module:
    if softmax:
        return nn.CrossEntropyLoss(weight=weights)
    return nn.BCEWithLogitsLoss(pos_weight=weights)


@dataclass
class Checkpointer:
    """Saves and loads one network's checkpoint (callables over the model's files)."""

    save: Callable[[dict], None]
    load: Callable[[], dict | None]


def make_optimizer(model: nn.Module, config: TrainConfig):
    """The run's optimizer (SGD with momentum, Adam or AdamW, with its weight decay) and its
    learning-rate schedule (linear decay to zero over ``epochs``, or constant)."""
    params, lr, decay = model.parameters(), config.learning_rate, config.weight_decay or 0.0
    if config.optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=config.momentum, weight_decay=decay)
    elif config.optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=decay)
    schedule = ((lambda e: max(1.0 - e / config.epochs, 0.0)) if config.lr_decay == "linear"
                else (lambda e: 1.0))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, schedule)


class EarlyStopping:
    """The epochs' bookkeeping both training loops share (this module's :func:`fit` and
    :func:`training.track_fit.fit_tracks`): the history rows, the best weights by a validation
    score (a tuple, higher is better), ``patience``, a checkpoint at most every
    ``checkpoint_seconds`` and when training ends, the progress line and ``on_epoch``.

    Construct it, then ``start = keeper.resume()``: the first epoch to run (the checkpoint's
    next, or 0 with the seed set), and ``keeper.done`` when the checkpointed run had ended. Call
    ``keeper.end_epoch(row, score)`` after each epoch's validation, stop when it returns True,
    and ``keeper.finish()`` for the history, the model holding its best weights."""

    def __init__(self, model: nn.Module, opt, sched, checkpoint: Checkpointer,
                 config: TrainConfig, worst: tuple, label: str = "", progress: bool = True,
                 on_epoch: Callable[[dict], None] | None = None):
        self.model, self.opt, self.sched, self.checkpoint = model, opt, sched, checkpoint
        self.config, self.label, self.progress, self.on_epoch = config, label, progress, on_epoch
        self.history: list[dict] = []
        self.best, self.best_state, self.bad, self.done = worst, None, 0, False
        self._saved_at = time.monotonic()

    def resume(self) -> int:
        """Load the last checkpoint into the model, optimizer, schedule and torch's random
        state; without one, seed a fresh run. Returns the first epoch to run."""
        state = self.checkpoint.load()
        if state is None:
            torch.manual_seed(self.config.seed)
            return 0
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        if "best_score" in state:
            self.best = tuple(state["best_score"])
        else:  # written before the loops shared this: fit's lowest loss, fit_tracks' (LRAP, loss)
            best = state.get("best_val")
            self.best = (-best,) if best is not None else (state["best"][0], -state["best"][1])
        self.bad = state["bad_epochs"]
        self.best_state, self.history = state["best_state"], state["history"]
        self.done = state["done"]
        return state["epoch"] + 1

    def end_epoch(self, row: dict, score: tuple, note: str = "") -> bool:
        """Record epoch ``row`` (``epoch``, ``train_loss``, ``val_loss``, ``tiles_per_s``, ...)
        with its validation ``score``; keep the weights if it is the best so far, checkpoint
        when due, report. ``note`` goes into the progress line after the validation loss.
        Returns whether training ends here (patience run out, or the last epoch)."""
        self.history.append(row)
        if score > self.best:
            self.best, self.bad = score, 0
            self.best_state = copy.deepcopy(self.model.state_dict())
        else:
            self.bad += 1
        epoch = row["epoch"]
        self.done = self.bad >= self.config.patience or epoch == self.config.epochs - 1
        if self.done or time.monotonic() - self._saved_at >= self.config.checkpoint_seconds:
            self.checkpoint.save({
                "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": epoch, "best_score": self.best,
                "bad_epochs": self.bad, "best_state": self.best_state, "history": self.history,
                "torch_rng": torch.get_rng_state(), "done": self.done})
            self._saved_at = time.monotonic()
        if self.progress:
            print(f"{self.label} epoch {epoch + 1}: train {row['train_loss']:.4f}, val "
                  f"{row['val_loss']:.4f}{note}{' *' if self.bad == 0 else ''}, "
                  f"{row['tiles_per_s']:.0f} tiles/s", flush=True)
        if self.on_epoch is not None:
            self.on_epoch(row)
        return self.done

    def finish(self) -> list[dict]:
        """The history; the model holds the best weights."""
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        return self.history


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module, opt,
               device: torch.device, mixed_precision: bool) -> torch.Tensor:
    """One optimizer step on the batch ``x``, ``y`` (on ``device``); returns the batch's mean
    loss, on the device (reading it would wait for the step)."""
    with autocast(device, mixed_precision):
        out = model(x)
    loss = loss_fn(out.float(), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.detach()


def evaluate_loss(model: nn.Module, dataset: BlockShuffleTiles, loss_fn: nn.Module,
                  device: torch.device, config: TrainConfig) -> float:
    """Mean loss over the dataset's plan (every tile once, no dropout)."""
    model.eval()
    total, n = torch.zeros((), device=device), 0  # summed on the device: no sync per batch
    with torch.no_grad():
        for x, y in to_device(make_loader(dataset, config.loader_workers), device):
            with autocast(device, config.mixed_precision):
                out = model(x)
            total += loss_fn(out.float(), y) * len(x)
            n += len(x)
    return float(total) / max(n, 1)


def fit(model: nn.Module, sampler, train_data: BlockShuffleTiles, val_data: BlockShuffleTiles,
        softmax: bool, config: TrainConfig, device: torch.device, checkpoint: Checkpointer,
        label: str = "", progress: bool = True,
        on_epoch: Callable[[dict], None] | None = None) -> list[dict]:
    """Train ``model`` in place; on return it holds the best weights (lowest validation loss).
    Returns the history rows (one per epoch, resumed ones included)."""
    place(model, device)
    loss_fn = make_loss(softmax, sampler.loss_weights()).to(device)
    val_loss_fn = make_loss(softmax, None).to(device)
    opt, sched = make_optimizer(model, config)
    keeper = EarlyStopping(model, opt, sched, checkpoint, config, (-float("inf"),), label,
                           progress, on_epoch)  # score: minus the validation loss
    start = keeper.resume()
    if keeper.done:
        return keeper.finish()
    for epoch in range(start, config.epochs):
        index, targets = sampler.epoch(epoch)
        train_data.set_plan(index, targets, epoch)
        model.train()
        started, seen = time.perf_counter(), 0
        total = torch.zeros((), device=device)  # summed on the device: no sync per step
        bar = tqdm(total=len(index), desc=f"{label} epoch {epoch + 1}/{config.epochs}",
                   unit="tile", disable=not progress, leave=False)
        batches = to_device(make_loader(train_data, config.loader_workers), device)
        for step, (x, y) in enumerate(batches):
            loss = train_step(model, x, y, loss_fn, opt, device, config.mixed_precision)
            seen += len(x)
            total += loss * len(x)
            bar.update(len(x))
            if progress and step % 50 == 0:
                bar.set_postfix(loss=f"{float(total) / seen:.4f}")
        bar.close()
        total = float(total)
        seconds = time.perf_counter() - started
        lr = opt.param_groups[0]["lr"]
        sched.step()
        val_loss = evaluate_loss(model, val_data, val_loss_fn, device, config)
        row = {"member": label, "epoch": epoch, "train_loss": total / max(seen, 1),
               "val_loss": val_loss, "lr": lr, "tiles": seen, "seconds": seconds,
               "tiles_per_s": seen / max(seconds, 1e-9)}
        if keeper.end_epoch(row, (-val_loss,)):
            break
    return keeper.finish()


def predict(model: nn.Module, dataset: BlockShuffleTiles, index: np.ndarray, softmax: bool,
            device: torch.device, config: TrainConfig) -> np.ndarray:
    """Scores (probabilities) of the tiles at ``index``, in that order."""
    place(model.eval(), device)
    dataset.set_plan(index, np.arange(len(index), dtype=np.int64))  # targets carry positions
    scores: np.ndarray | None = None
    with torch.no_grad():
        for x, position in make_loader(dataset, 0):
            out = probabilities(model, x, softmax, device, config.mixed_precision)
            if scores is None:
                scores = np.zeros((len(index), out.shape[1]), dtype=np.float32)
            scores[position.numpy()] = out
    return scores if scores is not None else np.zeros((0, 0), np.float32)
