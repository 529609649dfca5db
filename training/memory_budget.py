"""How many tiles a training run may keep in memory (see ``TrainConfig.memory_budget_mb``)."""

from __future__ import annotations

import numpy as np
import psutil
import torch

from training.config import TrainConfig


def budget_bytes(config: TrainConfig, device: torch.device) -> int:
    """The run's budget for tiles kept in memory (in bytes of :func:`tile_bytes`):
    ``memory_budget_mb`` when set, else a quarter of the host's available memory, and on a CUDA
    device also at most half its free memory (the activations and the optimizer need the
    rest)."""
    if config.memory_budget_mb is not None:
        return int(config.memory_budget_mb * 2**20)
    host = psutil.virtual_memory().available // 4
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # the tiles stay in host memory as float32 too (they are read there), so the host's
        # quarter bounds that copy: as bfloat16 on the device, half as many bytes
        itemsize = tile_bytes((1,), config, device)
        return int(min(free // 2, host * itemsize // 4))
    return int(host)


def device_dtype(config: TrainConfig, device: torch.device) -> torch.dtype:
    """The dtype of the ensemble's tile tensor on ``device``: ``tile_dtype`` on CUDA, float32
    on a CPU (whose convolutions run in float32)."""
    return torch.bfloat16 if config.tile_dtype == "bfloat16" and device.type == "cuda" else (
        torch.float32)


def tile_bytes(tile_shape: tuple[int, ...], config: TrainConfig, device: torch.device) -> int:
    """Bytes of one tile as the run keeps it: the ensemble's on the device
    (:func:`device_dtype`), the other models' in host memory as float32."""
    dtype = device_dtype(config, device) if config.arch == "ensemble" else torch.float32
    return dtype.itemsize * int(np.prod(tile_shape))
