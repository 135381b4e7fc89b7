"""The batch loader: each step's batch is the trainer's in-process batch, whatever the workers and start step."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from seg25d.models import Feeding
from seg25d.pipeline.cache import prepare_data
from seg25d.pipeline.config import DEFAULTS, load_config
from seg25d.pipeline.data import BatchSampler, step_generator
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.loader import BatchLoader, SlotBatch, Slots, StepBatch, default_workers, resolve_workers
from seg25d.pipeline.training import _load_data, train

FAMILIES = {"slices": Feeding("slices"), "stacks": Feeding("stacks", slices=3), "volume": Feeding("volume"),
            "patches": Feeding("patches")}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """In-memory and cached cases of one small dataset, and a config with every augmentation on."""
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    root = tmp_path_factory.mktemp("loader")
    manifest = write_vessel_dataset(root / "vessels", n=4, shape=(8, 16, 12), seed=0, progress=False)
    config = copy.deepcopy(DEFAULTS)
    config["data"].update(manifest=str(manifest), cache="off", val_fraction=0.0, patch_size=[6, 8, 8])
    config["augment"].update(rotate_degrees=20.0, gamma=0.3, flip_axes=[0, 1, 2])
    config["train"].update(progress=False, batch_size=2, slices_per_step=3)
    frame = pd.read_csv(manifest)
    frame["split"] = "train"
    frame.to_csv(manifest, index=False)
    _, _, _, in_memory, _ = _load_data(config, main=False)
    _, _, cached, _ = prepare_data(config, root / "cache", progress=False)
    return config, in_memory, cached


def _trainer_batch(sampler, seed, step, rank):
    """The batch as the trainer draws it in process: the model's seed first, then the batch."""
    generator = step_generator(seed, step, rank)
    torch.randint(2**62, (1,), generator=generator)
    return sampler.batch(generator)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_batches_equal_the_in_process_batches(data, family, workers):
    config, in_memory, cached = data
    reference = BatchSampler(in_memory, FAMILIES[family], config)
    loader = BatchLoader(BatchSampler(cached, FAMILIES[family], config), seed=3, rank=0, start=5,
                         stop=9, workers=workers)
    for step in range(5, 9):  # a run resumed at step 5
        x, y = loader.batch(step)
        rx, ry = _trainer_batch(reference, 3, step, 0)
        assert torch.equal(x, rx) and torch.equal(y, ry), step
        assert loader.data_seconds >= 0
    loader.close()


@pytest.mark.parametrize("family", ["volume", "slices"])
def test_worker_slots_are_reused_without_mixing_batches(data, family):
    """Twenty steps through two workers' slots (three each): every slot written several times, every batch whole."""
    config, _, cached = data
    sampler = BatchSampler(cached, FAMILIES[family], config)
    loader = BatchLoader(sampler, seed=1, rank=0, start=0, stop=20, workers=2)
    for step in range(20):
        x, y = loader.batch(step)
        rx, ry = _trainer_batch(sampler, 1, step, 0)
        assert torch.equal(x, rx) and torch.equal(y, ry), step
    assert (loader.dataset.slots.stamps >= 14).all()  # each of the 6 slots holds one of the last steps
    loader.close()


def test_slots_copy_out_fall_back_and_catch_an_overwrite():
    slots = Slots(workers=1, depth=2, nbytes=100)
    x, y = torch.arange(12.0).view(3, 4), torch.tensor([True, False, True])
    first = slots.put(0, 7, x, y)
    assert isinstance(first, SlotBatch)
    tx, ty = slots.take(first)
    assert torch.equal(tx, x) and torch.equal(ty, y)
    tx.zero_()  # a copy: the slot keeps the batch
    assert torch.equal(slots.take(first)[0], x)
    large = slots.put(0, 8, torch.zeros(100), y)
    assert isinstance(large, StepBatch) and large.x.shape == (100,)  # too large for a slot: sent as it is
    slots.put(0, 9, x, y)
    slots.put(0, 10, x + 1, y)  # the third batch in two slots lands where step 7 was
    with pytest.raises(RuntimeError, match="slot 0 holds step 10, not step 7"):
        slots.take(first)


@pytest.mark.parametrize("workers", [0, 2])
def test_steps_passed_over_are_dropped(data, workers):
    config, _, cached = data
    sampler = BatchSampler(cached, Feeding("slices"), config)
    loader = BatchLoader(sampler, seed=0, rank=0, start=0, stop=10, workers=workers)
    for step in (0, 4, 5, 9):
        assert torch.equal(loader.batch(step)[0], _trainer_batch(sampler, 0, step, 0)[0])
    with pytest.raises(ValueError, match="step 2 asked for after step 9"):
        loader.batch(2)


def test_ranks_draw_different_batches(data):
    config, _, cached = data
    sampler = BatchSampler(cached, Feeding("slices"), config)
    x0, _ = BatchLoader(sampler, seed=0, rank=0, start=0, stop=1).batch(0)
    x1, _ = BatchLoader(sampler, seed=0, rank=1, start=0, stop=1).batch(0)
    assert x0.shape == x1.shape and not torch.equal(x0, x1)


def test_workers_setting():
    assert 0 <= default_workers() <= 4 and default_workers(world=10**6) == 0
    assert resolve_workers("auto") == default_workers() and resolve_workers(3) == 3 and resolve_workers(0) == 0
    for bad in (-1, 1.5, "two", True):
        with pytest.raises(InputError, match="train.workers"):
            resolve_workers(bad)


def test_training_through_the_cache_and_workers_matches_in_memory(data, tmp_path):
    """The same run, in memory with batches made in process and from the cache with two workers: same weights."""
    config, _, _ = data
    overrides = [f"data.manifest={config['data']['manifest']!r}", "model.name=unet2d",
                 "model.options.base_channels=4", "model.options.depth=2", "train.max_steps=3",
                 "train.slices_per_step=2", "train.val_every=3", "train.progress=false", "train.precision=fp32"]
    in_memory = load_config(None, overrides + ["data.cache=off", "train.workers=0"])
    cached = load_config(None, overrides + [f"data.cache={str(tmp_path / 'cache')!r}", "train.workers=2"])
    states = []
    for name, cfg in (("memory", in_memory), ("cached", cached)):
        result = train(cfg, tmp_path / name)
        states.append(torch.load(result.last_checkpoint, weights_only=True)["model_state"])
        metrics = pd.read_csv(tmp_path / name / "metrics.csv")
        assert len(metrics) == 3 and (metrics.data_seconds >= 0).all()
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
