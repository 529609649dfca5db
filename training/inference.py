"""Running a model: the device, the layout tiles run fastest in, mixed precision, and the class
probabilities of a batch of tiles, one function for training's held-out predictions and scoring's
tasks."""

from __future__ import annotations

import socket

import torch
from torch import nn

from training.models import channels_last


def parse_device(name: str) -> torch.device:
    """The device ``name`` names: ``auto`` (CUDA when present here, else the CPU) or a torch
    device string. Only its form is checked: a scheduler's workers may have a GPU this
    machine lacks."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):  # what training and scoring run on
        raise ValueError(f"device {name!r}: use auto (CUDA when present), cpu, cuda or "
                         "cuda:N")
    return device


def resolve_device(name: str) -> torch.device:
    """:func:`parse_device`, and a CUDA device this process can use."""
    device = parse_device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = "" if torch.version.cuda else ", a build without CUDA"
        raise ValueError(f"device {name!r}: no CUDA device on {socket.gethostname()} (torch "
                         f"{torch.__version__}{build}); use auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: {socket.gethostname()} has "
                         f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def place(module_or_tiles, device: torch.device):
    """A model or a tile batch on ``device`` in channels-last layout: the layout oneDNN and
    cuDNN convolutions and pooling run fastest in (see benchmarks/scoring_throughput.py)."""
    if isinstance(module_or_tiles, nn.Module):
        return module_or_tiles.to(device=device, memory_format=torch.channels_last)
    return channels_last(module_or_tiles.to(device, non_blocking=True))


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on CUDA (bfloat16), none on the CPU."""
    # bfloat16 on CUDA needs no loss scaling; CPU runs in float32
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=enabled and device.type == "cuda")


def probabilities(model: nn.Module, tiles: torch.Tensor, softmax: bool, device: torch.device,
                  mixed_precision: bool = True, hidden: bool = False):
    """Class probabilities ``(tiles, classes)`` of a batch ``(tiles, 1, coefficients, frames)``
    on the CPU: the softmax or per-class sigmoid of the logits of ``model`` (already placed on
    ``device`` with :func:`place`). Call it under ``torch.no_grad`` or ``inference_mode``.
    With ``hidden``, ``(probabilities, hidden layer)`` from the same pass, the model's
    ``outputs`` (a tile model's last hidden layer, float32)."""
    with autocast(device, mixed_precision):
        x = place(tiles, device)
        logits, layer = model.outputs(x) if hidden else (model(x), None)
    logits = logits.float()
    probs = (logits.softmax(1) if softmax else logits.sigmoid()).cpu().numpy()
    return (probs, layer.float().cpu().numpy()) if hidden else probs
