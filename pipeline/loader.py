"""Training batches made ahead in worker processes: a ``torch.utils.data.DataLoader`` over step indices.

Item ``s`` of :class:`StepBatches` is the batch of training step ``s`` exactly as the trainer draws it in
process: the step's generator (:func:`~seg25d.pipeline.data.step_generator` of ``(seed, s, rank)``) first gives
the seed of the model's own randomness, then the sampler draws the batch from it. A batch is therefore the same
whether it is made in a worker or in the trainer, with any number of workers, and a resumed run starts the
loader at its step. Workers are forked, so they share the sampler's cases (memory-mapped from the cache, or
in memory) without copying them.
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
    """Iterate the batches of steps ``start`` to ``stop - 1`` in order, made by ``workers`` processes
    (0: in this process) ``prefetch`` batches ahead each; ``data_seconds`` is how long the last batch was waited
    for (its making time with no workers).

    Example:
        >>> loader = BatchLoader(sampler, seed=0, rank=0, start=trainer_step, stop=max_steps, workers=2)
        >>> for step, x, y in loader: ...  # doctest: +SKIP
    """

    def __init__(self, sampler: BatchSampler, seed: int, rank: int, start: int, stop: int, workers: int = 0,
                 pin_memory: bool | None = None, prefetch: int = 2):
        self.dataset = StepBatches(sampler, seed, rank, start, stop)
        self.next_step = int(start)
        self.data_seconds = 0.0
        extra = {"prefetch_factor": prefetch} if workers else {}
        self._loader = DataLoader(
            self.dataset, batch_size=None, shuffle=False, num_workers=workers,
            pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
            generator=torch.Generator().manual_seed(0),  # the loader's own seed draw leaves torch's global RNG alone
            **extra)
        self._iterator = None

    def __iter__(self) -> "BatchLoader":
        return self

    def __next__(self) -> StepBatch:
        if self._iterator is None:
            self._iterator = iter(self._loader)
        start = time.perf_counter()
        item = next(self._iterator)
        self.data_seconds = time.perf_counter() - start
        if item.step != self.next_step:  # never expected: batches come back in order
            raise RuntimeError(f"batch loader returned step {item.step}, expected {self.next_step}")
        self.next_step += 1
        return item

    def close(self) -> None:
        """Stop the workers (also done when the loader is garbage collected)."""
        self._iterator = None
