"""Batches onto the training device, the copies overlapped with the steps that use them.

On CUDA, each batch is copied from pinned host memory on a side stream, ``ahead`` batches before
the step that needs it, so the copy runs while the GPU computes the previous steps and the host
never waits on it (a plain ``.to(device)`` from pageable memory is synchronous). On a CPU,
batches pass through in the layout the model runs fastest in.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

import torch

from training.inference import place


def to_device(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device,
              ahead: int = 2) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(tiles, targets)`` batches of ``batches`` on ``device``: tiles channels-last
    (:func:`training.inference.place`), up to ``ahead`` batches in flight on CUDA."""
    if device.type != "cuda":
        for x, y in batches:
            yield place(x, device), y.to(device)
        return
    copies = torch.cuda.Stream(device)
    in_flight: deque = deque()
    for x, y in batches:
        x = x if x.is_pinned() else x.pin_memory()
        y = y if y.is_pinned() else y.pin_memory()
        with torch.cuda.stream(copies):
            xd, yd = place(x, device), y.to(device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(copies)
        in_flight.append((xd, yd, done))
        if len(in_flight) > ahead:
            yield _ready(*in_flight.popleft())
    while in_flight:
        yield _ready(*in_flight.popleft())


def _ready(x: torch.Tensor, y: torch.Tensor, done: torch.cuda.Event):
    stream = torch.cuda.current_stream(x.device)
    stream.wait_event(done)
    # the tensors were made on the copy stream: keep their memory until this stream is done
    x.record_stream(stream)
    y.record_stream(stream)
    return x, y
