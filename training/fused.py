"""The one-vs-rest ensemble as one module, and its members trained in the same steps.

:class:`FusedEnsemble` holds every member's weights stacked along a leading member axis. On a GPU
its layers run as grouped convolutions and batched matmuls, one kernel per layer for all
members; on a CPU each member runs its own convolutions on its slice of the stacks, because
oneDNN's grouped convolutions are slower there than the members' own (see
``benchmarks/gpu_training.py``). Either way the function is the members': "same" padding, max-pool
before ReLU, the same dropout rates.

:class:`FusedTrainer` takes every member's own batch of tiles, gathered by index from one tile
tensor on the device, and updates every member in one step: the members' mean losses are summed
(so each keeps its own gradient scale) and :class:`MemberOptimizer` moves only the members that
had a batch, each with its own step count. On a CPU the members of a step run in parallel
threads, one core each. :func:`train_ensemble` runs the epochs: each member draws its own
balanced sample (:class:`~training.samplers.OneVsRestSampler`) every epoch, and has its own
validation loss, early stopping and best weights. Weight files stay one
:class:`~training.models.Tagger` state dict per member, so scoring and older stores are unchanged.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from training.config import TrainConfig
from training.inference import autocast
from training.memory_budget import device_dtype
from training.models import Ensemble, Tagger, member, same_pad
from training.samplers import OneVsRestSampler, TileTable

#: Tiles per thread task on a CPU. A 32-tile task's buffers (the largest, the first block's
#: activation, 16 MiB) are reused from the heap without page faults in a run
#: (:mod:`training.heap`); tasks of 64 and 128 tiles faulted 3-170 pages a tile and ran up to
#: 15% slower on 2 threads. Small tasks also keep every core busy when members are fewer than
#: cores.
CPU_CHUNK = 32


def _dropout(h: torch.Tensor, p: float, training: bool,
             generator: torch.Generator | None) -> torch.Tensor:
    """Dropout drawing from ``generator`` (reproducible whichever thread runs it)."""
    if not training or p == 0:
        return h
    # torch.compile cannot trace a generator argument: it would cut the graph at every dropout
    if generator is None or torch.compiler.is_compiling():
        return F.dropout(h, p, True)
    if h.device.type != "cpu":  # a GPU draws a number a value as fast as it reads one
        return h * torch.empty_like(h).bernoulli_(1 - p, generator=generator) * (1 / (1 - p))
    # 16 random bits a value, four values from each 64-bit draw: bernoulli_ draws a number a
    # value on a CPU, which made dropout a tenth of a training step
    n, cut = h.numel(), round(p * 65536)
    words = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), generator=generator,
                          dtype=torch.int64)
    keep = words.view(torch.int16)[:n] >= cut - 32768
    if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last):  # in h's order
        b, c, rows, cols = h.shape
        keep = keep.view(b, rows, cols, c).permute(0, 3, 1, 2)
    else:
        keep = keep.view(h.shape)
    return h * keep.to(h.dtype).mul_(65536 / (65536 - cut))


class FusedEnsemble(nn.Module):
    """Ensemble members (:func:`training.models.member`) with their weights stacked.

    ``forward(x)``: one batch ``(B, 1, H, W)`` for every member, ``(B, M)`` logits (what
    scoring needs, a drop-in for :class:`~training.models.Ensemble`). ``forward_members(x)``:
    each member its own batch, ``(m, B, 1, H, W)`` to ``(m, B)``. ``forward_member(x, k)``: one
    member. Built from members (``FusedEnsemble(members)``, their weights copied) and turned
    back into members with :meth:`to_members` or :meth:`copy_to`. Move it with ``.to(device)``:
    its convolutions run channels-last (:func:`training.models.same_pad`).
    """

    def __init__(self, members: Sequence[Tagger]):
        super().__init__()
        first = members[0]
        blocks = list(first.features)
        if (not blocks or any(not isinstance(b, nn.Sequential) or len(b) != 5 for b in blocks)
                or first.head[-1].out_features != 1):
            raise ValueError("FusedEnsemble takes ensemble members (training.models.member), "
                             "one output each")
        self.n_members = len(members)
        self.tile_shape = tuple(first.standardize.mean.shape)
        self.kernels = [b[1].kernel_size[0] for b in blocks]
        self.conv_dropout = [b[4].p for b in blocks]
        self.head_dropout = (first.head[1].p, first.head[4].p)
        self.dense = first.head[2].out_features
        self.register_buffer("mean", torch.zeros(len(members), *self.tile_shape))
        self.register_buffer("std", torch.ones(len(members), *self.tile_shape))
        self.conv_weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(members), *b[1].weight.shape)) for b in blocks])
        self.conv_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(members), *b[1].bias.shape)) for b in blocks])
        linears = [first.head[i] for i in (2, 5, 7)]
        self.dense_weights = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(members), *lin.weight.shape)) for lin in linears])
        self.dense_biases = nn.ParameterList(
            [nn.Parameter(torch.zeros(len(members), *lin.bias.shape)) for lin in linears])
        self.copy_from(members)

    def stacks(self) -> list[torch.Tensor]:
        """The stacked parameters, ``(M, ...)`` each, in layer order (weight, bias, ...)."""
        return [t for pair in zip(self.conv_weights, self.conv_biases) for t in pair] + [
            t for pair in zip(self.dense_weights, self.dense_biases) for t in pair]

    def _member_tensors(self, net: Tagger) -> list[torch.Tensor]:
        # the member's tensors in the order of stacks()
        convs = [b[1] for b in net.features]
        linears = [net.head[i] for i in (2, 5, 7)]
        return [t for c in convs for t in (c.weight, c.bias)] + [
            t for lin in linears for t in (lin.weight, lin.bias)]

    @torch.no_grad()
    def copy_from(self, members: Sequence[Tagger]) -> None:
        """Take the members' weights and standardization."""
        if len(members) != self.n_members:
            raise ValueError(f"{len(members)} members for a fused ensemble of {self.n_members}")
        for k, net in enumerate(members):
            self.mean[k].copy_(net.standardize.mean)
            self.std[k].copy_(net.standardize.std)
            for stack, t in zip(self.stacks(), self._member_tensors(net), strict=True):
                stack[k].copy_(t)

    @torch.no_grad()
    def copy_to(self, members: Sequence[Tagger]) -> None:
        """Write the weights and standardization into ``members`` (on their own devices)."""
        for k, net in enumerate(members):
            net.standardize.mean.copy_(self.mean[k])
            net.standardize.std.copy_(self.std[k])
            for stack, t in zip(self.stacks(), self._member_tensors(net), strict=True):
                t.copy_(stack[k])

    def to_members(self) -> list[Tagger]:
        """One :class:`~training.models.Tagger` per member, on the CPU."""
        dropout = (*self.conv_dropout, self.head_dropout[1])
        nets = [member(self.tile_shape, self.dense, dropout) for _ in range(self.n_members)]
        self.copy_to(nets)
        return nets

    def forward_member(self, x: torch.Tensor, k: int, params: Sequence[torch.Tensor] | None = None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """Member ``k`` on ``(B, 1, H, W)``: ``(B,)`` logits. ``params``: its tensors in the
        order of :meth:`stacks` (default: its rows of the stacks)."""
        p = list(params) if params is not None else [t[k] for t in self.stacks()]
        return F.linear(self._member_hidden(x, k, p, generator), p[-2], p[-1])[:, 0]

    def _member_hidden(self, x: torch.Tensor, k: int, p: Sequence[torch.Tensor],
                       generator: torch.Generator | None) -> torch.Tensor:
        # member k's last hidden layer (B, dense): every layer but the output one
        n_conv = len(self.kernels)
        h = (x - self.mean[k]) / self.std[k]
        for i, kernel in enumerate(self.kernels):
            h = F.conv2d(same_pad(h, kernel), p[2 * i], p[2 * i + 1])
            h = _dropout(F.relu(F.max_pool2d(h, 2)), self.conv_dropout[i], self.training,
                         generator)
        h = _dropout(h.flatten(1), self.head_dropout[0], self.training, generator)
        w = p[2 * n_conv:]
        h = _dropout(F.relu(F.linear(h, w[0], w[1])), self.head_dropout[1], self.training,
                     generator)
        return F.relu(F.linear(h, w[2], w[3]))

    def _grouped_hidden(self, h: torch.Tensor, params: Sequence[torch.Tensor],
                        generator: torch.Generator | None) -> torch.Tensor:
        # h: (B, m, H, W) standardized tiles, member j's in channel j; params: (m, ...) stacks;
        # returns every member's last hidden layer, (m, B, dense)
        m, n_conv = params[0].shape[0], len(self.kernels)
        for i, kernel in enumerate(self.kernels):
            h = F.conv2d(same_pad(h, kernel), params[2 * i].flatten(0, 1),
                         params[2 * i + 1].flatten(), groups=m)
            h = _dropout(F.relu(F.max_pool2d(h, 2)), self.conv_dropout[i], self.training,
                         generator)
        # each member's features in its own Flatten order (channel, row, column)
        h = h.reshape(h.shape[0], m, -1).transpose(0, 1)
        h = _dropout(h, self.head_dropout[0], self.training, generator)
        w = params[2 * n_conv:]
        h = F.relu(torch.baddbmm(w[1].unsqueeze(1), h, w[0].transpose(1, 2)))
        h = _dropout(h, self.head_dropout[1], self.training, generator)
        return F.relu(torch.baddbmm(w[3].unsqueeze(1), h, w[2].transpose(1, 2)))

    @staticmethod
    def _grouped_logits(hidden: torch.Tensor, params: Sequence[torch.Tensor]) -> torch.Tensor:
        # (m, B, dense) hidden layers to (m, B) logits through each member's output layer
        return torch.baddbmm(params[-1].unsqueeze(1), hidden, params[-2].transpose(1, 2))[..., 0]

    def _grouped(self, h: torch.Tensor, params: Sequence[torch.Tensor],
                 generator: torch.Generator | None) -> torch.Tensor:
        return self._grouped_logits(self._grouped_hidden(h, params, generator), params)

    def forward_members(self, x: torch.Tensor, members: torch.Tensor | None = None,
                        params: Sequence[torch.Tensor] | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
        """Each member its own batch, all in one grouped pass: ``x`` ``(m, B, 1, H, W)`` for the
        members at index ``members`` (default: all, in order) to ``(m, B)`` logits. ``params``:
        those members' rows of :meth:`stacks` (default: selected from the stacks)."""
        if params is None:
            params = self.stacks() if members is None else [
                t.index_select(0, members) for t in self.stacks()]
        mean, std = ((self.mean, self.std) if members is None else
                     (self.mean.index_select(0, members), self.std.index_select(0, members)))
        h = (x[:, :, 0] - mean[:, None]) / std[:, None]
        return self._grouped(h.transpose(0, 1), params, generator)

    def outputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward``'s logits ``(B, M)`` and every member's last hidden layer side by side,
        ``(B, M * dense)`` (member 0's first), as :meth:`Ensemble.outputs
        <training.models.Ensemble.outputs>` gives them, from one grouped pass."""
        params = self.stacks()
        hidden = self._grouped_hidden((x - self.mean) / self.std, params, None)
        return (self._grouped_logits(hidden, params).transpose(0, 1),
                hidden.transpose(0, 1).flatten(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` to ``(B, M)`` logits in one grouped pass: a GPU's way (on a CPU the
        plain :class:`~training.models.Ensemble`, members one after another, runs faster)."""
        return self._grouped((x - self.mean) / self.std, self.stacks(), None).transpose(0, 1)


class MemberOptimizer:
    """SGD with momentum or Adam (``torch.optim``'s update rules) over stacked ``(M, ...)``
    parameters, where each step moves only the given members' rows and each member counts its
    own steps (Adam's bias correction)."""

    def __init__(self, params: Sequence[torch.Tensor], kind: str = "sgd",
                 momentum: float = 0.9, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        if kind not in ("sgd", "adam"):
            raise ValueError(f"optimizer {kind!r}: choose sgd or adam")
        self.params, self.kind = list(params), kind
        self.momentum, self.betas, self.eps = momentum, betas, eps
        self.n_members = self.params[0].shape[0]
        device = self.params[0].device
        self.steps = torch.zeros(self.n_members, dtype=torch.float64, device=device)
        n_state = 1 if kind == "sgd" else 2
        self.state = [[torch.zeros_like(p) for _ in range(n_state)] for p in self.params]
        self._index: dict[tuple[int, ...], torch.Tensor] = {}

    def _rows(self, rows: Sequence[int]) -> slice | torch.Tensor:
        rows = tuple(rows)
        if rows == tuple(range(self.n_members)):
            return slice(None)
        if len(rows) == 1:
            return slice(rows[0], rows[0] + 1)
        if rows not in self._index:  # one host-to-device copy per set of members
            self._index[rows] = torch.tensor(rows, device=self.steps.device)
        return self._index[rows]

    @torch.no_grad()
    def step(self, rows: Sequence[int], grads: Sequence[torch.Tensor], lr: float) -> None:
        """Update the members ``rows`` (in that order) with ``grads``, ``(len(rows), ...)``
        each, at learning rate ``lr``; every other member stays as it is, state included."""
        sel = self._rows(rows)
        gather = isinstance(sel, torch.Tensor)
        if gather:
            self.steps.index_add_(0, sel, torch.ones_like(sel, dtype=torch.float64))
        else:
            self.steps[sel] += 1
        if self.kind == "sgd" and sel == slice(None):  # every member: a few fused kernels
            buffers = [state[0] for state in self.state]
            torch._foreach_mul_(buffers, self.momentum)
            torch._foreach_add_(buffers, [g.to(p.dtype) for p, g in zip(self.params, grads)])
            torch._foreach_add_(self.params, buffers, alpha=-lr)
            return
        steps = self.steps[sel]
        if self.kind == "adam":
            beta1, beta2 = self.betas
            step_size = lr / (1 - beta1 ** steps)
            bias2_sqrt = (1 - beta2 ** steps).sqrt()
        for p, g, state in zip(self.params, grads, self.state):
            shape = (-1,) + (1,) * (p.dim() - 1)
            tensors = [t.index_select(0, sel) if gather else t[sel] for t in (p, *state)]
            q, *s = tensors
            g = g.to(q.dtype)
            if self.kind == "sgd":
                s[0].mul_(self.momentum).add_(g)
                q.add_(s[0], alpha=-lr)
            else:
                s[0].lerp_(g, 1 - self.betas[0])
                s[1].mul_(self.betas[1]).addcmul_(g, g, value=1 - self.betas[1])
                denom = (s[1].sqrt() / bias2_sqrt.to(q.dtype).view(shape)).add_(self.eps)
                q.sub_(s[0] / denom * step_size.to(q.dtype).view(shape))
            if gather:
                for t, new in zip((p, *state), tensors):
                    t.index_copy_(0, sel, new)

    def state_dict(self) -> dict:
        return {"kind": self.kind, "steps": self.steps.clone(),
                "state": [[t.clone() for t in s] for s in self.state]}

    def load_state_dict(self, saved: dict) -> None:
        if saved["kind"] != self.kind:
            raise ValueError(f"a {saved['kind']} optimizer state for a {self.kind} optimizer")
        self.steps.copy_(saved["steps"])
        for mine, theirs in zip(self.state, saved["state"], strict=True):
            for t, v in zip(mine, theirs, strict=True):
                t.copy_(v)


@contextlib.contextmanager
def _one_thread_per_task():
    """Torch ops on one thread each while member tasks run in parallel threads: coarse tasks
    without OpenMP barriers inside every op (which stall whenever another process takes a
    core)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield threads
    finally:
        torch.set_num_threads(threads)


class FusedTrainer:
    """Steps and validation of a :class:`FusedEnsemble` on tiles gathered from one tensor.

    ``tiles``: ``(N, H, W)`` float32 (or bfloat16 on CUDA) on the training device; batches are
    rows of it given by position. ``grouped``: one grouped pass per step (default on CUDA) or each member on its
    own (default on a CPU, its steps split into tasks of :data:`CPU_CHUNK` tiles run on a
    thread per core). ``pos_weight``: ``(M,)`` positive-class loss weights or ``None``.
    """

    def __init__(self, model: FusedEnsemble, tiles: torch.Tensor, config: TrainConfig,
                 pos_weight: torch.Tensor | None = None, grouped: bool | None = None,
                 threads: int | None = None):
        config = config.resolved()  # unset settings: the ensemble's defaults
        self.model, self.tiles, self.config = model, tiles, config
        self.device = tiles.device
        self.grouped = self.device.type == "cuda" if grouped is None else grouped
        self.threads = threads or torch.get_num_threads()
        self.pos_weight = None if pos_weight is None else pos_weight.to(self.device)
        self.optimizer = MemberOptimizer(model.stacks(), config.optimizer, config.momentum)
        self.generators = self._generators(config.seed)
        self._index: dict[tuple[int, ...], torch.Tensor] = {}
        self._grads = None if self.grouped else [torch.zeros_like(t) for t in model.stacks()]
        # the grouped pass, compiled on request (kept only where measured faster)
        self._forward = (torch.compile(model.forward_members) if config.compile and self.grouped
                         else model.forward_members)

    def _generators(self, seed: int) -> list[torch.Generator]:
        # dropout draws: one stream on the GPU; on a CPU one per (member, task slot), so that
        # results do not depend on which thread runs a task first
        n = 1 if self.grouped else self.model.n_members * -(-self.config.batch_size // CPU_CHUNK)
        out = []
        for j in range(n):
            g = torch.Generator(device=self.device)
            g.manual_seed(int(np.random.SeedSequence([seed, j]).generate_state(1)[0]))
            out.append(g)
        return out

    def generator_states(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_generator_states(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states, strict=True):
            g.set_state(s)

    def _cached(self, values: Sequence[int]) -> torch.Tensor:
        # an index tensor on the device, copied there once per set of values
        key = tuple(values)
        if key not in self._index:
            self._index[key] = torch.tensor(key, device=self.device)
        return self._index[key]

    def _members(self, rows: Sequence[int]) -> torch.Tensor | None:
        return None if list(rows) == list(range(self.model.n_members)) else self._cached(rows)

    def _loss(self, logits: torch.Tensor, y: torch.Tensor,
              pos_weight: torch.Tensor | None) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.to(y.dtype), y, pos_weight=pos_weight,
                                                  reduction="none")

    def _cpu_task(self, k: int, pos: torch.Tensor, y: torch.Tensor, scale: float, slot: int):
        # one member's share of a step, on its own thread: (loss sum, grads of scale * sum)
        params = [t[k].detach().requires_grad_() for t in self.model.stacks()]
        x = self.tiles[pos].unsqueeze(1)
        logits = self.model.forward_member(x, k, params, self.generators[slot])
        pw = None if self.pos_weight is None else self.pos_weight[k:k + 1]
        total = self._loss(logits, y, pw).sum()
        return total.detach(), torch.autograd.grad(total * scale, params)

    def step(self, rows: Sequence[int], pos: torch.Tensor, y: torch.Tensor, w: torch.Tensor,
             counts: Sequence[int], lr: float, pool: ThreadPoolExecutor | None = None
             ) -> torch.Tensor:
        """One step of the members ``rows``: row ``j`` of ``pos`` (tile positions), ``y``
        (targets) and ``w`` (``1 / counts[j]`` on valid entries, 0 on padding), all
        ``(len(rows), B)`` on the device, is member ``rows[j]``'s batch, its first ``counts[j]``
        entries valid. Each member's loss is its batch mean; their sum is minimized. Returns
        each member's summed tile loss (on the device)."""
        self.model.train()
        if self.grouped:
            return self._grouped_step(rows, pos, y, w, lr)
        slots = len(self.generators) // self.model.n_members
        tasks = [(k, pos[j, start:min(start + CPU_CHUNK, count)],
                  y[j, start:min(start + CPU_CHUNK, count)], 1 / count, k * slots + c)
                 for j, (k, count) in enumerate(zip(rows, counts))
                 for c, start in enumerate(range(0, count, CPU_CHUNK))]
        run = pool.map if pool is not None else map
        results = list(run(lambda task: self._cpu_task(*task), tasks))
        sums = torch.zeros(len(rows), device=self.device)
        seen = set()
        for (k, *_), (total, grads) in zip(tasks, results):  # in task order: deterministic
            sums[rows.index(k)] += total
            for buffer, g in zip(self._grads, grads):
                (buffer[k].add_ if k in seen else buffer[k].copy_)(g)
            seen.add(k)
        grads = self._grads if list(rows) == list(range(self.model.n_members)) else [
            b[torch.tensor(list(rows))] for b in self._grads]
        self.optimizer.step(rows, grads, lr)
        return sums

    def _grouped_step(self, rows, pos, y, w, lr) -> torch.Tensor:
        members = self._members(rows)
        params = [(t if members is None else t.index_select(0, members)).detach()
                  .requires_grad_() for t in self.model.stacks()]
        # compiled for every member at once only: subsets would each compile anew
        forward = self._forward if members is None else self.model.forward_members
        with autocast(self.device, self.config.mixed_precision):
            logits = forward(self.tiles[pos].unsqueeze(2), members, params, self.generators[0])
        pw = None if self.pos_weight is None else (
            self.pos_weight if members is None else self.pos_weight[members])[:, None]
        losses = self._loss(logits, y, pw)
        grads = torch.autograd.grad((losses * w).sum(), params)
        self.optimizer.step(rows, grads, lr)
        return (losses * (w > 0)).sum(1).detach()

    @torch.no_grad()
    def evaluate(self, rows: Sequence[int], plans: Sequence[tuple[torch.Tensor, torch.Tensor]],
                 pool: ThreadPoolExecutor | None = None) -> list[float]:
        """Mean loss (no class weights, no dropout) of each member ``rows[j]`` over its own
        tiles ``plans[j] = (positions, targets)``."""
        self.model.eval()
        batch = self.config.batch_size
        if not self.grouped:
            def task(j: int, k: int, start: int) -> torch.Tensor:
                stop = start + CPU_CHUNK
                pos, y = plans[j][0][start:stop], plans[j][1][start:stop]
                x = self.tiles[pos].unsqueeze(1)
                with torch.no_grad():  # grad mode is per thread
                    return self._loss(self.model.forward_member(x, k), y, None).sum()

            tasks = [(j, k, s) for j, k in enumerate(rows)
                     for s in range(0, len(plans[j][0]), CPU_CHUNK)]
            run = pool.map if pool is not None else map
            sums = np.zeros(len(rows))
            for (j, _, _), total in zip(tasks, run(lambda t: task(*t), tasks)):
                sums[j] += float(total)
            return list(sums / np.maximum([len(p[0]) for p in plans], 1))
        members = self._members(rows)
        longest = max(len(p[0]) for p in plans)
        pos = torch.zeros(len(rows), longest, dtype=torch.long, device=self.device)
        y = torch.zeros(len(rows), longest, device=self.device)
        for j, (p, t) in enumerate(plans):
            pos[j, :len(p)], y[j, :len(t)] = p, t
        counts = torch.as_tensor([len(p[0]) for p in plans], device=self.device)
        sums = torch.zeros(len(rows), device=self.device)
        for start in range(0, longest, batch):
            x = self.tiles[pos[:, start:start + batch]].unsqueeze(2)
            with autocast(self.device, self.config.mixed_precision):
                logits = self.model.forward_members(x, members)
            valid = torch.arange(start, start + x.shape[1], device=self.device) < counts[:, None]
            sums += (self._loss(logits, y[:, start:start + batch], None) * valid).sum(1)
        return (sums / counts.clamp_min(1)).tolist()

    def epoch(self, rows: Sequence[int], plans: Sequence[tuple[np.ndarray, np.ndarray]],
              epoch: int, lr: float, pool: ThreadPoolExecutor | None = None
              ) -> tuple[list[float], list[int]]:
        """One epoch of the members ``rows``, member ``rows[j]`` on its own tiles
        ``plans[j] = (positions, targets)`` in a fresh shuffle (seeded by epoch and member),
        in batches of ``batch_size``; all step together, a member whose tiles run out sits the
        remaining steps out. Returns each member's mean training loss and tile count."""
        batch = self.config.batch_size
        sizes = [len(p[0]) for p in plans]
        steps = max(-(-n // batch) for n in sizes)
        pos = np.zeros((len(rows), steps * batch), dtype=np.int64)
        y = np.zeros((len(rows), steps * batch), dtype=np.float32)
        w = np.zeros((len(rows), steps * batch), dtype=np.float32)
        counts = np.zeros((len(rows), steps), dtype=np.int64)
        for j, (k, (p, t)) in enumerate(zip(rows, plans)):
            order = np.random.default_rng([self.config.seed, epoch, k]).permutation(len(p))
            pos[j, :len(p)], y[j, :len(p)] = p[order], t[order]
            counts[j] = np.clip(len(p) - batch * np.arange(steps), 0, batch)
            w[j, :len(p)] = np.repeat(1 / np.maximum(counts[j], 1), batch)[:len(p)]
        # the epoch's batches go to the device at once: steps only slice them
        pos_d, y_d, w_d = (torch.from_numpy(a).to(self.device) for a in (pos, y, w))
        sums = torch.zeros(len(rows), device=self.device)
        for s in range(steps):
            live = [j for j in range(len(rows)) if counts[j, s] > 0]
            cols = slice(s * batch, (s + 1) * batch)
            if len(live) == len(rows):
                sums += self.step(list(rows), pos_d[:, cols], y_d[:, cols], w_d[:, cols],
                                  counts[:, s].tolist(), lr, pool)
            else:
                index = self._cached(live)
                got = self.step([rows[j] for j in live], pos_d[index, cols], y_d[index, cols],
                                w_d[index, cols], counts[live, s].tolist(), lr, pool)
                sums.index_add_(0, index, got)
        return (sums.cpu().numpy() / np.maximum(sizes, 1)).tolist(), sizes

    @contextlib.contextmanager
    def workers(self):
        """The thread pool the CPU way runs member tasks on (``None`` when grouped)."""
        if self.grouped or self.threads <= 1:
            yield None
            return
        with _one_thread_per_task() as threads, ThreadPoolExecutor(threads) as pool:
            yield pool


def _positions(keys: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Rows of the in-memory tile array (sorted store indices ``keys``) of store ``index``."""
    return np.searchsorted(keys, index)


def train_ensemble(model: Ensemble, tables: dict[str, TileTable],
                   memory: tuple[np.ndarray, np.ndarray], labels: Sequence[str],
                   config: TrainConfig, device: torch.device, files, keys: Sequence[str],
                   progress: bool = True, on_epoch: Callable[[dict], None] | None = None,
                   grouped: bool | None = None) -> list[dict]:
    """Train the ensemble's members together on the in-memory tiles and save each member's best
    weights as ``weights/<key>.pt``; ``model``'s members hold them on return.

    ``memory``: (sorted store indices, tiles) of every tile of ``tables``. State is saved to
    ``checkpoints/ensemble.pt`` every ``config.checkpoint_seconds`` and at the end, so that
    running it again after an interruption resumes. Returns the history rows (member, epoch,
    train_loss, val_loss, lr, tiles, seconds, tiles_per_s), member by member.
    """
    n = len(model.members)
    fused = FusedEnsemble(list(model.members)).to(device)
    samplers = [OneVsRestSampler(tables["train"], k, config.balance, config.seed + k)
                for k in range(n)]
    weights = [s.loss_weights() for s in samplers]
    pos_weight = None if weights[0] is None else torch.cat(weights)
    tiles = torch.from_numpy(memory[1]).to(device, device_dtype(config, device))
    trainer = FusedTrainer(fused, tiles, config, pos_weight, grouped)
    val = []
    for k in range(n):
        index, target = OneVsRestSampler(tables["val"], k, "equal", config.seed).epoch(0)
        val.append((torch.from_numpy(_positions(memory[0], index)).to(device),
                    torch.from_numpy(target[:, 0]).to(device)))
    decay = (lambda e: max(1.0 - e / config.epochs, 0.0)) if config.lr_decay == "linear" else (
        lambda e: 1.0)

    start, history = 0, []
    best_val, bad, stopped = [float("inf")] * n, [0] * n, [False] * n
    best = [t.detach().clone() for t in fused.stacks()]
    state = files.load_torch("checkpoints", "ensemble.pt")
    if state is not None:  # resume: everything as it was after the checkpointed epoch
        fused.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.set_generator_states(state["generators"])
        for b, saved in zip(best, state["best"], strict=True):
            b.copy_(saved)
        start, history = state["epoch"] + 1, state["history"]
        best_val, bad, stopped = state["best_val"], state["bad_epochs"], state["stopped"]

    def checkpoint(epoch: int) -> None:
        files.save_torch({"model": fused.state_dict(), "optimizer": trainer.optimizer.state_dict(),
                          "generators": trainer.generator_states(), "best": best,
                          "epoch": epoch, "history": history, "best_val": best_val,
                          "bad_epochs": bad, "stopped": stopped}, "checkpoints", "ensemble.pt")

    saved_at = time.monotonic()
    with trainer.workers() as pool:
        for epoch in range(start, config.epochs):
            rows = [k for k in range(n) if not stopped[k]]
            if not rows:
                break
            plans = []
            for k in rows:
                index, target = samplers[k].epoch(epoch)
                plans.append((_positions(memory[0], index), target[:, 0]))
            lr = config.learning_rate * decay(epoch)
            began = time.perf_counter()
            train_loss, sizes = trainer.epoch(rows, plans, epoch, lr, pool)
            seconds = time.perf_counter() - began
            val_loss = trainer.evaluate(rows, [val[k] for k in rows], pool)
            rows_out = []
            for j, k in enumerate(rows):
                improved = val_loss[j] < best_val[k]
                if improved:
                    best_val[k], bad[k] = val_loss[j], 0
                    for b, t in zip(best, fused.stacks()):
                        b[k].copy_(t[k])
                else:
                    bad[k] += 1
                stopped[k] = bad[k] >= config.patience or epoch == config.epochs - 1
                rows_out.append({"member": labels[k], "epoch": epoch,
                                 "train_loss": train_loss[j], "val_loss": val_loss[j], "lr": lr,
                                 "tiles": sizes[j], "seconds": seconds,
                                 "tiles_per_s": sizes[j] / max(seconds, 1e-9)})
            history += rows_out
            if all(stopped) or time.monotonic() - saved_at >= config.checkpoint_seconds:
                checkpoint(epoch)
                saved_at = time.monotonic()
            if progress:
                marks = ", ".join(f"{r['member']} {r['val_loss']:.4f}"
                                  f"{' *' if bad[k] == 0 else ''}"
                                  for k, r in zip(rows, rows_out))
                print(f"epoch {epoch + 1}/{config.epochs}: val {marks}; "
                      f"{sum(sizes) / max(seconds, 1e-9):.0f} member-tiles/s", flush=True)
            if on_epoch is not None:
                for row in rows_out:
                    on_epoch(row)
    with torch.no_grad():
        for t, b in zip(fused.stacks(), best):
            t.copy_(b)
    fused.copy_to(list(model.members))
    for net, key in zip(model.members, keys):
        files.save_torch(net.state_dict(), "weights", f"{key}.pt")
    order = {label: i for i, label in enumerate(labels)}
    return sorted(history, key=lambda r: (order[r["member"]], r["epoch"]))
