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
from training.inference import autocast, place, probabilities
from training.device_feed import to_device
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


def restore(checkpoint: Checkpointer, model: nn.Module, opt, sched, seed: int) -> dict | None:
    """Load the last checkpoint into the model, optimizer, schedule and torch's random state
    and return it; without one, seed a fresh run and return None."""
    state = checkpoint.load()
    if state is None:
        torch.manual_seed(seed)
        return None
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state


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
    history: list[dict] = []
    start, best_val, best_state, bad = 0, float("inf"), None, 0
    state = restore(checkpoint, model, opt, sched, config.seed)
    if state is not None:  # resume: everything as it was after the last finished epoch
        start, best_val, bad = state["epoch"] + 1, state["best_val"], state["bad_epochs"]
        best_state, history = state["best_state"], state["history"]
        if state.get("done"):
            model.load_state_dict(best_state)
            return history
    done, saved_at = False, time.monotonic()
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
            with autocast(device, config.mixed_precision):
                out = model(x)
            loss = loss_fn(out.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(x)
            total += loss.detach() * len(x)
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
        history.append(row)
        if val_loss < best_val:
            best_val, bad = val_loss, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad += 1
        done = bad >= config.patience or epoch == config.epochs - 1
        if done or time.monotonic() - saved_at >= config.checkpoint_seconds:
            saved_at = time.monotonic()
            checkpoint.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                             "scheduler": sched.state_dict(), "epoch": epoch,
                             "best_val": best_val, "bad_epochs": bad, "best_state": best_state,
                             "history": history, "torch_rng": torch.get_rng_state(),
                             "done": done})
        if progress:
            print(f"{label} epoch {epoch + 1}: train {row['train_loss']:.4f}, val "
                  f"{val_loss:.4f}{' *' if bad == 0 else ''}, {row['tiles_per_s']:.0f} tiles/s",
                  flush=True)
        if on_epoch is not None:
            on_epoch(row)
        if done:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


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
