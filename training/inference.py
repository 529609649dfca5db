"""Running a model: the device, the layout tiles run fastest in, mixed precision, and the class
probabilities of a batch of tiles, one function for training's held-out predictions and scoring's
tasks."""

from __future__ import annotations

import torch
from torch import nn

from training.models import channels_last


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA when present, else CPU; or an explicit torch device string."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
