"""Training batches made ahead in worker processes: a ``torch.utils.data.DataLoader`` over step indices.

Item ``s`` of :class:`StepBatches` is the batch of training step ``s`` exactly as the trainer draws it in
process: the step's generator (:func:`~seg25d.pipeline.data.step_generator` of ``(seed, s, rank)``) first gives
the seed of the model's own randomness, then the sampler draws the batch from it. A batch is therefore the same
whether it is made in a worker or in the trainer, with any number of workers, and a resumed run starts the
loader at its step. Workers are forked, so they share the sampler's cases (memory-mapped from the cache, or
in memory) without copying them.

Workers make batches ahead in step order; :meth:`BatchLoader.batch` hands them to the trainer and reports how
long it waited (``data_seconds``), the measure of whether loading keeps up with training. A batch crosses from
a worker through :class:`Slots`, shared buffers mapped once: as a fresh shared-memory tensor, each batch would
be faulted in page by page by the worker writing it and again by the trainer reading it, which costs a volume
batch more than making it.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info

from seg25d.pipeline.data import BatchSampler, step_generator
from seg25d.pipeline.errors import InputError

__all__ = ["StepBatch", "StepBatches", "BatchLoader", "Slots", "resolve_workers", "default_workers"]


class StepBatch(NamedTuple):
    step: int
    x: torch.Tensor
    y: torch.Tensor


def _aligned(nbytes: int) -> int:
    return -(-int(nbytes) // 64) * 64  # slot rows and offsets aligned for any dtype


class SlotBatch(NamedTuple):
    """A batch a worker wrote into slot ``slot`` of the loader's :class:`Slots`."""

    step: int
    slot: int
    x: tuple  # (shape, dtype)
    y: tuple


class Slots:
    """Shared buffers, ``depth`` per worker, that workers write batches into: allocated before the workers fork,
    so worker and trainer keep them mapped and a batch costs one copy on each side.

    A worker writes its batches into its own slots in turn. The ``DataLoader`` gives a worker a new step only
    when the trainer takes one of its batches, and never more than ``prefetch`` untaken, so ``prefetch + 1``
    slots per worker are never overwritten before the trainer has copied them. ``stamps[slot]`` holds the step
    written there (-1 while writing); the trainer checks it before and after its copy, so a broken assumption
    fails loudly instead of mixing two batches.
    """

    def __init__(self, workers: int, depth: int, nbytes: int):
        self.depth, self.nbytes = int(depth), _aligned(nbytes)
        self.data = torch.empty(workers * self.depth, self.nbytes, dtype=torch.uint8, device="cpu").share_memory_()
        self.stamps = torch.full((workers * self.depth,), -1, dtype=torch.int64, device="cpu").share_memory_()
        self.written = 0  # batches written by this process (each forked worker counts its own)

    def _views(self, slot: int, x: tuple, y: tuple) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's bytes as ``x`` and ``y`` (each a ``(shape, dtype)``), ``y`` from the first aligned byte after ``x``."""
        views, offset = [], 0
        for shape, dtype in (x, y):
            nbytes = torch.Size(shape).numel() * dtype.itemsize
            views.append(self.data[slot, offset:offset + nbytes].view(dtype).view(shape))
            offset = _aligned(offset + nbytes)
        return views[0], views[1]

    def put(self, worker: int, step: int, x: torch.Tensor, y: torch.Tensor) -> SlotBatch | StepBatch:
        """Write the batch into this worker's next slot; a batch too large for a slot is returned as it is."""
        if _aligned(x.nbytes) + y.nbytes > self.nbytes:
            return StepBatch(step, x, y)
        slot = worker * self.depth + self.written % self.depth
        self.written += 1
        batch = SlotBatch(step, slot, (x.shape, x.dtype), (y.shape, y.dtype))
        self.stamps[slot] = -1
        for view, t in zip(self._views(slot, batch.x, batch.y), (x, y)):
            view.copy_(t)
        self.stamps[slot] = step
        return batch

    def take(self, batch: SlotBatch, pin_memory: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the batch in ``batch.slot`` (pinned toward a GPU)."""
        self._check(batch)
        x, y = (torch.empty(v.shape, dtype=v.dtype, device="cpu", pin_memory=pin_memory).copy_(v)
                for v in self._views(batch.slot, batch.x, batch.y))
        self._check(batch)
        return x, y

    def _check(self, batch: SlotBatch) -> None:
        if int(self.stamps[batch.slot]) != batch.step:
            raise RuntimeError(f"slot {batch.slot} holds step {int(self.stamps[batch.slot])}, not step {batch.step}: "
                               "a worker overwrote a batch the trainer had not taken")


def default_workers(world: int = 1) -> int:
    """A share of the cores for batch making: one core per rank stays with training, up to 4 workers per rank."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores // max(1, world) - 1))


def _lower_priority(_worker_id: int) -> None:
    """Workers yield the cores to training: a worker ahead of the trainer can wait, a preempted training thread
    stalls every thread of its operation."""
    try:
        os.nice(10)
    except OSError:
        pass


def resolve_workers(setting, world: int = 1) -> int:
    """``train.workers``: ``"auto"`` (:func:`default_workers`) or a count; 0 makes batches in the training process."""
    if setting == "auto":
        return default_workers(world)
    if isinstance(setting, bool) or not isinstance(setting, int) or setting < 0:
        raise InputError("train.workers", f"must be 'auto' or a count >= 0, got {setting!r}")
    return setting


class StepBatches(Dataset):
    """The batches of steps ``start``, ``start + 1``, ... ``stop - 1`` (item ``i`` is step ``start + i``)."""

    def __init__(self, sampler: BatchSampler, seed: int, rank: int, start: int, stop: int):
        self.sampler, self.seed, self.rank, self.start, self.stop = sampler, int(seed), int(rank), int(start), int(stop)
        self.slots: Slots | None = None  # set by the loader before its workers start

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> StepBatch | SlotBatch:
        step = self.start + int(i)
        generator = step_generator(self.seed, step, self.rank)
        torch.randint(2**62, (1,), generator=generator)  # the trainer's first draw: the model's seed for the step
        x, y = self.sampler.batch(generator)
        worker = get_worker_info()
        if self.slots is not None and worker is not None:
            return self.slots.put(worker.id, step, x, y)
        return StepBatch(step, x, y)


class BatchLoader:
    """The batches of steps ``start`` to ``stop - 1``, made by ``workers`` processes ``prefetch`` batches ahead
    each, or on demand in this process (``workers=0``); ``data_seconds`` is how long the last batch was waited for.

    Example:
        >>> loader = BatchLoader(sampler, seed=0, rank=0, start=resumed_step, stop=max_steps, workers=2)
        >>> x, y = loader.batch(step)  # doctest: +SKIP
    """

    def __init__(self, sampler: BatchSampler, seed: int, rank: int, start: int, stop: int, workers: int = 0,
                 pin_memory: bool | None = None, prefetch: int = 2):
        self.dataset = StepBatches(sampler, seed, rank, start, stop)
        self.workers = int(workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch = int(prefetch)
        self.data_seconds = 0.0
        self._next = int(start)
        self._iterator = None

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of ``step``, not before the last one asked for (the batches of steps passed over, such as
        projection25d's path-2 steps, are dropped)."""
        if step < self._next:
            raise ValueError(f"batch of step {step} asked for after step {self._next - 1}")
        start = time.perf_counter()
        if not self.workers:
            item = self.dataset[step - self.dataset.start]
        else:
            if self._iterator is None:
                self.dataset.slots = Slots(self.workers, self.prefetch + 1, self.dataset.sampler.largest_batch_nbytes())
                self._iterator = iter(DataLoader(
                    self.dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                    prefetch_factor=self.prefetch, worker_init_fn=_lower_priority,
                    generator=torch.Generator().manual_seed(0)))  # leaves torch's global generator alone
            item = next(self._iterator)
            while item.step < step:
                item = next(self._iterator)
        if isinstance(item, SlotBatch):
            x, y = self.dataset.slots.take(item, self.pin_memory)
        else:
            x, y = (item.x.pin_memory(), item.y.pin_memory()) if self.pin_memory else (item.x, item.y)
        self.data_seconds = time.perf_counter() - start
        self._next = step + 1
        return x, y

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage collected)."""
        self._iterator = None
