"""Training batches made ahead in worker processes: a ``torch.utils.data.DataLoader`` over step indices.

Item ``s`` of :class:`StepBatches` is the batch of training step ``s`` exactly as the trainer draws it in
process: the step's generator (:func:`~seg25d.pipeline.data.step_generator` of ``(seed, s, rank)``) first gives
the seed of the model's own randomness, then the sampler draws the batch from it. A batch is therefore the same
whether it is made in a worker or in the trainer, with any number of workers, and a resumed run starts the
loader at its step. Workers are forked, so they share the sampler's cases (memory-mapped from the cache, or
in memory) without copying them.

Workers make batches ahead in step order; :meth:`BatchLoader.batch` hands them to the trainer and reports how
long it waited (``data_seconds``), the measure of whether loading keeps up with training.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch
from torch.utils.data import DataLoader, Dataset

from seg25d.pipeline.data import BatchSampler, step_generator
from seg25d.pipeline.errors import InputError

__all__ = ["StepBatch", "StepBatches", "BatchLoader", "resolve_workers", "default_workers"]


class StepBatch(NamedTuple):
    step: int
    x: torch.Tensor
    y: torch.Tensor


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

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> StepBatch:
        step = self.start + int(i)
        generator = step_generator(self.seed, step, self.rank)
        torch.randint(2**62, (1,), generator=generator)  # the trainer's first draw: the model's seed for the step
        x, y = self.sampler.batch(generator)
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
            x, y = (item.x.pin_memory(), item.y.pin_memory()) if self.pin_memory else (item.x, item.y)
        else:
            if self._iterator is None:
                self._iterator = iter(DataLoader(
                    self.dataset, batch_size=None, shuffle=False, num_workers=self.workers,
                    pin_memory=self.pin_memory, prefetch_factor=self.prefetch, worker_init_fn=_lower_priority,
                    generator=torch.Generator().manual_seed(0)))  # leaves torch's global generator alone
            item = next(self._iterator)
            while item.step < step:
                item = next(self._iterator)
            x, y = item.x, item.y
        self.data_seconds = time.perf_counter() - start
        self._next = step + 1
        return x, y

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage collected)."""
        self._iterator = None
