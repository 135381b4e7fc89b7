"""Training data: manifest splits and folds, per-step batches for each model family, augmentation, preprocessing."""

from __future__ import annotations

import copy
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from seg25d.models import Feeding
from seg25d.models.slicestack import SliceStack25D
from seg25d.pipeline.config import DEFAULTS
from seg25d.pipeline.data import (BatchSampler, Case, group_folds, load_cases, split_manifest,
                                  step_generator, task_for)
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io import synthetic_meta, write_mask, write_volume
from seg25d.pipeline.manifest import LabelSpec, write_label_spec, write_manifest
from seg25d.pipeline.preprocess import Preprocessing


@pytest.fixture(scope="session")
def vessel_manifest(tmp_path_factory):
    from seg25d.pipeline.synth.vessels import write_vessel_dataset

    return write_vessel_dataset(tmp_path_factory.mktemp("vessels"), n=5, shape=(12, 16, 16), seed=0, progress=False)


# --- helpers -------------------------------------------------------------------------------------------------

def _fake_manifest(path, rows):
    """A manifest whose files need not exist (splitting never opens them). rows: (case_id, split, group)."""
    lines = ["case_id,image,label,split,group"]
    lines += [f"{c},img/{c}.nii.gz,lab/{c}.nii.gz,{s},{g}" for c, s, g in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(**sections) -> dict:
    """DEFAULTS with augmentation off, updated per section: ``_config(train={"slices_per_step": 4})``."""
    config = copy.deepcopy(DEFAULTS)
    config["augment"]["enabled"] = False
    for section, values in sections.items():
        config[section].update(values)
    return config


def _encoded(shape, channels=1) -> np.ndarray:
    """An image whose every voxel value names its position: ``c*100000 + d*1000 + h*32 + w`` (exact in float32)."""
    c, d, h, w = np.meshgrid(*(np.arange(n) for n in (channels, *shape)), indexing="ij")
    return (c * 100000 + d * 1000 + h * 32 + w).astype(np.float32)


def _case(case_id, image, masks) -> Case:
    return Case(case_id, case_id, image, masks, synthetic_meta(image.shape[1:]))


def _position(value: float) -> tuple[int, int, int, int]:
    v = int(round(float(value)))
    return v // 100000, v % 100000 // 1000, v % 1000 // 32, v % 1000 % 32


# --- task ------------------------------------------------------------------------------------------

def test_task_inferred_from_label_files(tmp_path):
    meta = synthetic_meta((3, 4, 5))
    label = np.zeros((3, 4, 5), np.uint8)
    label[0, 0, :2], label[2, 3, 4] = 2, 5
    write_volume(tmp_path / "i.nii.gz", np.zeros((3, 4, 5), np.float32), meta)
    write_mask(tmp_path / "l.nii.gz", label, meta)
    manifest = write_manifest(tmp_path / "m.csv", [{"case_id": "a", "image": str(tmp_path / "i.nii.gz"),
                                                    "label": str(tmp_path / "l.nii.gz"), "split": "train"}])
    task = task_for(manifest)  # no sidecar: one softmax class per nonzero value
    assert task.classes == ("class_2", "class_5") and not task.sigmoid and task.out_channels == 3
    case = load_cases(split_manifest(manifest, _config()["data"])[0], task, Preprocessing(), progress=False)[0]
    np.testing.assert_array_equal(case.masks, np.stack([label == 2, label == 5]))


def test_task_from_sidecar(vessel_manifest, tmp_path):
    task = task_for(vessel_manifest)
    assert task.classes == ("vessel",) and task.sigmoid and task.out_channels == 1
    softmax = LabelSpec(("a", "b"), (1, 2), "index")
    manifest = tmp_path / "m.csv"
    _fake_manifest(manifest, [("c0", "train", "")])
    write_label_spec(manifest, softmax)
    task = task_for(manifest)
    assert not task.sigmoid and task.out_channels == 3
    write_label_spec(manifest, LabelSpec(("a", "b"), (1, 2), "bitmask"))
    assert task_for(manifest).sigmoid and task_for(manifest).out_channels == 2


# --- splits --------------------------------------------------------------------------------------------------

def test_split_uses_manifest_splits(vessel_manifest):
    train, val = split_manifest(vessel_manifest, _config()["data"])
    assert list(train.case_id) == ["vessel_000", "vessel_001", "vessel_002"]
    assert list(val.case_id) == ["vessel_003"]  # vessel_004 is the test case


def test_split_val_fraction_ignored_when_manifest_has_val(vessel_manifest):
    train, val = split_manifest(vessel_manifest, _config(data={"val_fraction": 0.5})["data"])
    assert list(val.case_id) == ["vessel_003"] and len(train) == 3


GROUP_SIZES = {"p0": 4, "p1": 3, "p2": 2, "p3": 1, "p4": 5, "p5": 6}  # distinct sizes but p3


def _grouped_rows():
    rows = [(f"{g}_{i}", "train" if i % 2 else "val", g) for g, n in GROUP_SIZES.items() for i in range(n)]
    return rows + [("t0", "test", "pt"), ("t1", "test", "pt"), ("u0", "train", "pu")]


@pytest.mark.parametrize("folds", [2, 3, 4])
def test_group_folds_properties(tmp_path, folds):
    manifest = _fake_manifest(tmp_path / "m.csv", _grouped_rows())
    seen, sizes = [], []
    for fold in range(folds):
        train, val = split_manifest(manifest, _config(data={"folds": folds, "fold": fold})["data"])
        assert not set(train.group) & set(val.group), "a group in training and validation"
        assert not {"t0", "t1"} & (set(train.case_id) | set(val.case_id)), "test cases used"
        assert len(train) + len(val) == sum(GROUP_SIZES.values()) + 1
        assert len(val) > 0
        seen += list(val.case_id)
        sizes.append(len(val))
    # every non-test case (and so every group) is validated exactly once across the folds
    assert sorted(seen) == sorted(c for c, s, _ in _grouped_rows() if s != "test")
    # greedy largest-first dealing to the lightest fold keeps the folds within one group's size
    assert max(sizes) - min(sizes) <= max(GROUP_SIZES.values())


def test_group_folds_deterministic_and_seeded():
    groups = [g for g, n in {"a": 2, "b": 2, "c": 2, "d": 2, "e": 1, "f": 1}.items() for _ in range(n)]
    assert group_folds(groups, 3, seed=0) == group_folds(groups, 3, seed=0)
    assignments = {tuple(sorted(group_folds(groups, 3, seed=s).items())) for s in range(10)}
    assert len(assignments) > 1  # ties are broken by the seed
    for s in range(10):
        assign = group_folds(groups, 3, seed=s)
        loads = np.bincount([assign[g] for g in groups], minlength=3)
        assert sorted(loads) == [3, 3, 4]


def test_group_folds_match_sklearn(tmp_path):
    model_selection = pytest.importorskip("sklearn.model_selection")
    sizes = {"a": 7, "b": 5, "c": 4, "d": 3, "e": 2, "f": 1}
    groups = [g for g, n in sizes.items() for _ in range(n)]
    ours = group_folds(groups, 3)
    theirs = {frozenset(np.asarray(groups)[val]) for _, val in
              model_selection.GroupKFold(n_splits=3).split(np.zeros((len(groups), 1)), groups=groups)}
    assert {frozenset(g for g, k in ours.items() if k == f) for f in range(3)} == theirs


def test_split_exclude(tmp_path):
    manifest = _fake_manifest(tmp_path / "m.csv", _grouped_rows())
    data = _config(data={"exclude": ["p1", "p0_1", "p4_0"]})["data"]
    train, val = split_manifest(manifest, data)
    used = set(train.case_id) | set(val.case_id)
    assert not {"p1_0", "p1_1", "p1_2", "p0_1", "p4_0"} & used  # whole group p1, two single cases
    assert {"p0_0", "p0_2", "p4_1"} <= used
    data["folds"] = 3
    for fold in range(3):
        train, val = split_manifest(manifest, {**data, "fold": fold})
        assert "p1" not in set(train.group) | set(val.group)


def test_split_val_fraction_by_group(tmp_path):
    rows = [(f"g{g}_{i}", "train", f"g{g}") for g in range(5) for i in range(2)] + [("x", "test", "")]
    manifest = _fake_manifest(tmp_path / "m.csv", rows)
    held_sets = set()
    for seed in range(8):
        train, val = split_manifest(manifest, _config(data={"val_fraction": 0.3})["data"], seed=seed)
        assert val.group.nunique() == math.ceil(0.3 * 5)
        assert len(val) == 4 and len(train) == 6
        assert not set(train.group) & set(val.group)
        again = split_manifest(manifest, _config(data={"val_fraction": 0.3})["data"], seed=seed)[1]
        assert list(again.case_id) == list(val.case_id)
        held_sets.add(frozenset(val.group))
    assert len(held_sets) > 1
    # a tiny share still holds out one group; none without a share
    assert split_manifest(manifest, _config(data={"val_fraction": 0.01})["data"])[1].group.nunique() == 1
    assert split_manifest(manifest, _config()["data"])[1].empty


def test_split_errors(tmp_path):
    manifest = _fake_manifest(tmp_path / "m.csv", [("a", "train", "g"), ("b", "train", "g"), ("c", "val", "h")])
    with pytest.raises(InputError, match=r"2 groups \(outside the test split\) cannot make 3 folds"):
        split_manifest(manifest, _config(data={"folds": 3})["data"])
    only_val = _fake_manifest(tmp_path / "v.csv", [("a", "val", ""), ("b", "test", "")])
    with pytest.raises(InputError, match="no labelled training cases"):
        split_manifest(only_val, _config()["data"])
    unlabelled = tmp_path / "u.csv"
    unlabelled.write_text("case_id,image,label,split\na,img/a.nii.gz,,train\nb,img/b.nii.gz,lab/b.nii.gz,val\n")
    with pytest.raises(InputError, match="no labelled training cases"):
        split_manifest(unlabelled, _config()["data"])


# --- loading -------------------------------------------------------------------------------------------------

def test_load_cases_matches_files(vessel_manifest):
    train, _ = split_manifest(vessel_manifest, _config()["data"])
    cases = load_cases(train, task_for(vessel_manifest), Preprocessing(None, "case_zscore"), progress=False)
    assert [c.case_id for c in cases] == list(train.case_id)
    for case, row in zip(cases, train.itertuples()):
        raw = np.asarray(nib.load(row.image).dataobj, dtype=np.float32).transpose(2, 1, 0)  # (i,j,k) -> (k,j,i)
        label = np.asarray(nib.load(row.label).dataobj).transpose(2, 1, 0)
        assert case.image.shape == (1, 12, 16, 16) and case.image.dtype == np.float32
        np.testing.assert_allclose(case.image[0], (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)
        assert case.masks.dtype == bool and case.masks.shape == (1, 12, 16, 16)
        np.testing.assert_array_equal(case.masks[0], label == 1)
        assert case.masks.any()


def test_load_cases_rejects_bad_labels(tmp_path):
    meta = synthetic_meta((4, 5, 6))
    write_volume(tmp_path / "i.nii.gz", np.zeros((4, 5, 6), np.float32), meta)
    bad = np.zeros((4, 5, 6), np.uint8)
    bad[0, 0, 0] = 3
    write_mask(tmp_path / "bad.nii.gz", bad, meta)
    write_mask(tmp_path / "small.nii.gz", np.zeros((4, 5, 5), np.uint8), synthetic_meta((4, 5, 5)))
    manifest = write_manifest(tmp_path / "m.csv", [
        {"case_id": "a", "image": str(tmp_path / "i.nii.gz"), "label": str(tmp_path / "bad.nii.gz"), "split": "train"},
        {"case_id": "b", "image": str(tmp_path / "i.nii.gz"), "label": str(tmp_path / "small.nii.gz"), "split": "val"}])
    write_label_spec(manifest, LabelSpec(("x",), (1,)))
    train, val = split_manifest(manifest, _config()["data"])
    with pytest.raises(InputError, match=r"bad\.nii\.gz: label values \[3\]"):
        load_cases(train, task_for(manifest), Preprocessing(), progress=False)
    with pytest.raises(InputError, match="small.nii.gz: label shape"):
        load_cases(val, task_for(manifest), Preprocessing(), progress=False)


# --- per-step generators and batches -------------------------------------------------------------------------

def test_step_generator_determinism():
    draw = lambda *key: torch.rand(8, generator=step_generator(*key))  # noqa: E731
    assert torch.equal(draw(0, 5), draw(0, 5))
    assert torch.equal(draw(3, 5, 1), draw(3, 5, 1))
    variants = [draw(0, 5), draw(0, 6), draw(1, 5), draw(0, 5, 1), draw(5, 0)]
    for i in range(len(variants)):
        for j in range(i + 1, len(variants)):
            assert not torch.equal(variants[i], variants[j])


def _random_cases(n=3, shape=(6, 10, 12), channels=1, seed=0):
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        image = rng.standard_normal((channels, *shape)).astype(np.float32)
        masks = rng.random((1, *shape)) > 0.8
        cases.append(_case(f"c{i}", image, masks))
    return cases


@pytest.mark.parametrize("family, stack", [("volume", (1, 1, "clamp")), ("slices", (1, 1, "clamp")),
                                           ("stacks", (3, 2, "clamp"))])
def test_batches_pure_function_of_seed_and_step(family, stack):
    config = _config(augment={"enabled": True, "flip_axes": [0, 1, 2], "rotate_degrees": 15.0,
                              "scale_intensity": 0.2, "gamma": 0.3},
                     train={"batch_size": 2, "slices_per_step": 6}, data={"patch_size": [4, 8, 8]})
    cases = _random_cases()
    first = BatchSampler(cases, Feeding(family, *stack), config)
    second = BatchSampler(cases, Feeding(family, *stack), config)  # a fresh sampler, as after a resume
    x1, y1 = first.batch(step_generator(7, 3))
    first.batch(step_generator(7, 4))  # drawing other steps in between changes nothing
    x2, y2 = second.batch(step_generator(7, 3))
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, y3 = first.batch(step_generator(7, 4))
    assert not torch.equal(x1, x3)
    assert not torch.equal(x1, first.batch(step_generator(8, 3))[0])
    assert not torch.equal(x1, first.batch(step_generator(7, 3, rank=1))[0])


@pytest.mark.parametrize("family, stack, x_shape, y_shape", [
    ("volume", (1, 1, "clamp"), (3, 2, 6, 10, 12), (3, 1, 6, 10, 12)),
    ("slices", (1, 1, "clamp"), (5, 2, 10, 12), (5, 1, 10, 12)),
    ("stacks", (3, 2, "clamp"), (5, 6, 10, 12), (5, 1, 10, 12)),
    ("stacks", (5, 1, "mirror"), (5, 10, 10, 12), (5, 1, 10, 12)),
])
def test_batch_shapes(family, stack, x_shape, y_shape):
    sampler = BatchSampler(_random_cases(channels=2), Feeding(family, *stack),
                           _config(train={"batch_size": 3, "slices_per_step": 5}))
    x, y = sampler.batch(step_generator(0, 0))
    assert tuple(x.shape) == x_shape and tuple(y.shape) == y_shape
    assert x.dtype == torch.float32 and y.dtype == torch.bool  # masks travel as bool
    assert x.nbytes + y.nbytes <= sampler.largest_batch_nbytes()


def test_volume_batch_pads_to_largest():
    shapes = [(6, 8, 8), (4, 10, 7)]
    cases = [_case(f"c{i}", _encoded(s) + 1, np.ones((1, *s), bool)) for i, s in enumerate(shapes)]
    sampler = BatchSampler(cases, Feeding("volume"), _config(train={"batch_size": 8}))
    x, y = sampler.batch(step_generator(0, 0))
    assert tuple(x.shape) == (8, 1, 6, 10, 8)
    assert sampler.largest_batch_nbytes() == 8 * 6 * 10 * 8 * (4 + 1)  # float32 image, bool mask
    config = _config(train={"batch_size": 2}, data={"patch_size": [5, 9, 20]})
    assert BatchSampler(cases, Feeding("patches"), config).largest_batch_nbytes() == 2 * 5 * 9 * 8 * (4 + 1)
    drawn = set()
    for xi, yi in zip(x, y):
        s = next(s for s in shapes if float(xi[0, s[0] - 1, s[1] - 1, s[2] - 1]) == _encoded(s)[0, -1, -1, -1] + 1)
        drawn.add(s)
        d, h, w = s
        np.testing.assert_array_equal(xi[0, :d, :h, :w].numpy(), _encoded(s)[0] + 1)
        assert float(xi.sum()) == float((_encoded(s) + 1).sum())  # zero padding elsewhere
        assert float(yi.sum()) == d * h * w
    assert drawn == set(shapes)


def _expected_stack_index(d: int, offset: int, depth: int, edge: str) -> int:
    i = d + offset
    if edge == "clamp":
        return min(max(i, 0), depth - 1)
    while not 0 <= i < depth:  # reflect about the first / last slice
        i = -i if i < 0 else 2 * (depth - 1) - i
    return i


@pytest.mark.parametrize("k, stride, edge", [(3, 2, "clamp"), (5, 1, "clamp"), (3, 3, "mirror")])
def test_stack_channels_are_neighbouring_slices(k, stride, edge):
    depth, channels = 5, 2
    image = _encoded((depth, 6, 7), channels)
    masks = np.zeros((1, depth, 6, 7), bool)
    for d in range(depth):
        masks[0, d, d, :] = True  # the mask names its slice too
    case = _case("c", image, masks)
    sampler = BatchSampler([case], Feeding("stacks", k, stride, edge), _config(train={"slices_per_step": 40}))
    model = SliceStack25D(channels, 1, slices=k, stride=stride, edge=edge, backbone_options={"depth": 2,
                                                                                             "base_channels": 4})
    x, y = sampler.batch(step_generator(0, 0))
    assert x.shape[1] == channels * k
    centres = set()
    for xi, yi in zip(x, y):
        d = _position(xi[k // 2, 0, 0])[1]  # channel 0's centre slice
        centres.add(d)
        for c in range(channels):
            for j in range(k):
                src = _expected_stack_index(d, (j - k // 2) * stride, depth, edge)
                np.testing.assert_array_equal(xi[c * k + j].numpy(), image[c, src])
        np.testing.assert_array_equal(yi[0].numpy(), masks[0, d])
        # the model's own stacking (used at inference) builds the same input
        assert torch.equal(model.stack(torch.from_numpy(image)[None], torch.tensor([d]))[0], xi)
    assert {0, depth - 1} <= centres  # the edges (where clamping / mirroring acts) were drawn


def test_patch_crops_are_subvolumes():
    shape = (6, 9, 10)
    masks = np.zeros((1, *shape), bool)
    masks[0, 1:4, 2:7, 3:5] = True
    case = _case("c", _encoded(shape), masks)
    config = _config(data={"patch_size": [3, 5, 6], "foreground_fraction": 0.5}, train={"batch_size": 16})
    x, y = BatchSampler([case], Feeding("patches"), config).batch(step_generator(0, 1))
    assert tuple(x.shape) == (16, 1, 3, 5, 6) and tuple(y.shape) == (16, 1, 3, 5, 6)
    starts = set()
    for xi, yi in zip(x, y):
        _, d, h, w = _position(xi[0, 0, 0, 0])
        starts.add((d, h, w))
        np.testing.assert_array_equal(xi[0].numpy(), case.image[0, d:d + 3, h:h + 5, w:w + 6])
        np.testing.assert_array_equal(yi[0].numpy(), masks[0, d:d + 3, h:h + 5, w:w + 6])
    assert len(starts) > 3
    # a patch larger than the volume along an axis takes the whole axis
    config["data"]["patch_size"] = [10, 5, 5]
    x, _ = BatchSampler([case], Feeding("patches"), config).batch(step_generator(0, 2))
    assert tuple(x.shape) == (16, 1, 6, 5, 5)
    # projection25d ("volume") always sees whole volumes
    x, _ = BatchSampler([case], Feeding("volume"), config).batch(step_generator(0, 2))
    assert tuple(x.shape) == (16, 1, *shape)


def test_patch_foreground_fraction():
    shape = (8, 12, 12)
    masks = np.zeros((1, *shape), bool)
    masks[0, 7, 11, 11] = True  # one voxel in a corner: random patches mostly miss it
    case = _case("c", np.zeros((1, *shape), np.float32), masks)
    hits = {}
    for fraction in (0.0, 1.0):
        config = _config(data={"patch_size": [4, 4, 4], "foreground_fraction": fraction}, train={"batch_size": 32})
        sampler = BatchSampler([case], Feeding("patches"), config)
        y = torch.cat([sampler.batch(step_generator(0, s))[1] for s in range(4)])
        hits[fraction] = int(y.flatten(1).any(1).sum())
    assert hits[1.0] == 128
    assert hits[0.0] < 40  # a 4^3 patch holds the corner voxel with probability 1/(5*9*9)


@pytest.mark.parametrize("family", ["slices", "stacks"])
def test_slice_foreground_fraction(family):
    depth = 8
    masks = np.zeros((1, depth, 6, 6), bool)
    masks[0, 3, 2:4, 2:4] = True  # one slice in eight holds foreground
    case = _case("c", np.random.default_rng(0).standard_normal((1, depth, 6, 6)).astype(np.float32), masks)
    share = {}
    for fraction in (0.0, 0.5, 1.0):
        config = _config(data={"foreground_fraction": fraction}, train={"slices_per_step": 128})
        sampler = BatchSampler([case], Feeding(family, 3, 1, "clamp"), config)
        y = torch.cat([sampler.batch(step_generator(1, s))[1] for s in range(4)])
        share[fraction] = float(y.flatten(1).any(1).float().mean())
    assert share[1.0] == 1.0
    # binomial, n = 512: expected 1/8 and 1/2 + 1/16; bounds about 5 standard deviations
    assert abs(share[0.0] - 1 / 8) < 0.075
    assert abs(share[0.5] - 9 / 16) < 0.11


def _pattern(x: torch.Tensor) -> torch.Tensor:
    """An asymmetric mask defined by the (position-encoding) image values."""
    return (torch.round(x[:1]).long() % 7 == 0).float()


@pytest.mark.parametrize("family, flip_axes", [("slices", [1, 2]), ("volume", [0, 1, 2]), ("stacks", [2])])
def test_flips_apply_to_image_and_mask(family, flip_axes):
    shape = (4, 6, 7)
    image = _encoded(shape)
    masks = _pattern(torch.from_numpy(image)).numpy().astype(bool)
    case = _case("c", image, masks)
    config = _config(augment={"enabled": True, "flip_axes": flip_axes, "scale_intensity": 0.0},
                     train={"slices_per_step": 32, "batch_size": 32})
    x, y = BatchSampler([case], Feeding(family), config).batch(step_generator(0, 0))
    corners = set()
    for xi, yi in zip(x, y):
        assert torch.equal(yi, _pattern(xi)), "image and mask flipped differently"
        _, d, h, w = _position(xi.flatten()[0])
        corners.add((d, h, w) if family == "volume" else (h, w))
    expected = {(0, 0), (0, shape[2] - 1), (shape[1] - 1, 0), (shape[1] - 1, shape[2] - 1)}
    if family == "volume":
        expected = {(d, h, w) for d in (0, shape[0] - 1) for h, w in expected}
    if family == "stacks":
        expected = {(0, 0), (0, shape[2] - 1)}
    assert corners == expected  # every flip combination occurred, and nothing else


def test_depth_flip_ignored_for_slices():
    shape = (4, 6, 7)
    case = _case("c", _encoded(shape), np.zeros((1, *shape), bool))
    config = _config(augment={"enabled": True, "flip_axes": [0], "scale_intensity": 0.0},
                     train={"slices_per_step": 16})
    x, _ = BatchSampler([case], Feeding("slices"), config).batch(step_generator(0, 0))
    for xi in x:
        d = _position(xi[0, 0, 0])[1]
        assert torch.equal(xi[0], torch.from_numpy(case.image[0, d]))


def test_intensity_scaling_per_sample():
    shape = (4, 6, 7)
    case = _case("c", _encoded(shape) + 1, np.ones((1, *shape), bool))
    config = _config(augment={"enabled": True, "flip_axes": [], "scale_intensity": 0.1}, train={"batch_size": 8})
    x, y = BatchSampler([case], Feeding("volume"), config).batch(step_generator(0, 0))
    ratios = x / torch.from_numpy(case.image)
    factors = ratios.flatten(1)[:, 0]
    assert torch.allclose(ratios, factors.view(-1, 1, 1, 1, 1).expand_as(ratios), rtol=1e-5)
    assert ((factors >= 0.9) & (factors <= 1.1)).all() and factors.std() > 0
    assert torch.equal(y, torch.ones_like(y))


def test_rotation_moves_image_and_mask_together():
    shape = (3, 24, 24)
    masks = np.zeros((1, *shape), bool)
    masks[0, :, 4:10, 12:20] = True  # off-centre block
    case = _case("c", masks.astype(np.float32), masks)
    config = _config(augment={"enabled": True, "flip_axes": [], "rotate_degrees": 40.0, "scale_intensity": 0.0},
                     train={"slices_per_step": 16})
    x, y = BatchSampler([case], Feeding("slices"), config).batch(step_generator(0, 0))
    assert set(torch.unique(y).tolist()) <= {0.0, 1.0}
    assert not torch.equal(y[:, 0], torch.from_numpy(masks[0, :1]).float().expand(16, -1, -1))
    for xi, yi in zip(x, y):
        agree = ((xi[0] > 0.5) == (yi[0] > 0.5)).float().mean()
        assert agree > 0.97


def test_rotation_is_a_rotation_on_non_square_slices():
    """A disc stays a disc (not an ellipse) when a 20 x 40 slice is rotated by 90 degrees: the rotation acts
    in pixels, checked against scipy's rotation of the same mask."""
    from scipy import ndimage

    from seg25d.pipeline.data import _rotate_hw

    h, w = 20, 40
    yy, xx = np.mgrid[:h, :w]
    disc = (((yy - 9.5) ** 2 + (xx - 24.5) ** 2) <= 16).astype(np.float32)
    ours = _rotate_hw(torch.from_numpy(disc)[None], np.pi / 2, "nearest")[0].numpy()
    assert ours.sum() == disc.sum()  # area kept: no shear, no stretch
    assert (ours != ndimage.rotate(disc, 90, reshape=False, order=0)).sum() == 0  # a positive angle, as scipy's


def test_fold_settings_are_checked(tmp_path):
    from seg25d.pipeline.data import split_manifest
    from seg25d.pipeline.manifest import write_manifest

    rows = [{"case_id": f"c{i}", "image": "x.nii.gz", "label": "y.nii.gz", "split": "test" if i < 2 else "train",
             "group": f"g{i}"} for i in range(5)]
    manifest = tmp_path / "m.csv"
    write_manifest(manifest, rows)
    with pytest.raises(InputError, match="data.fold"):
        split_manifest(manifest, {"folds": 3, "fold": 3})
    with pytest.raises(InputError, match="outside the test split"):  # 3 groups left after the test split
        split_manifest(manifest, {"folds": 4, "fold": 0})
    train, val = split_manifest(manifest, {"folds": 3, "fold": 1})
    assert len(val) == 1 and len(train) == 2 and "test" not in set(train.split) | set(val.split)


# --- preprocessing -------------------------------------------------------------------------------------------

def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.gamma(2.0, 50.0, size=(2, 5, 6, 7)) + 10 * c).astype(np.float32) for c in range(3)]


def test_case_zscore_each_volume():
    image = _images()[0]
    out = Preprocessing(None, "case_zscore").image(image, (1, 1, 1))
    for c in range(2):
        np.testing.assert_allclose(out[c], (image[c] - image[c].mean()) / image[c].std(), rtol=1e-4, atol=1e-5)
        assert abs(out[c].mean()) < 1e-5 and abs(out[c].std() - 1) < 1e-5
    flat = Preprocessing(None, "case_zscore").image(np.full((3, 4, 5), 7.0), (1, 1, 1))
    assert np.isfinite(flat).all() and np.all(flat == 0)


def test_zscore_uses_training_statistics():
    images = _images()
    prep = Preprocessing(None, "zscore").fit(images)
    for c in range(2):
        pooled = np.concatenate([im[c].ravel() for im in images]).astype(np.float64)
        assert prep.stats["mean"][c] == pytest.approx(pooled.mean(), rel=1e-5)
        assert prep.stats["std"][c] == pytest.approx(pooled.std(), rel=1e-5)
    new = _images(seed=1)[0]
    out = prep.image(new, (1, 1, 1))
    for c in range(2):
        np.testing.assert_allclose(out[c], (new[c] - prep.stats["mean"][c]) / prep.stats["std"][c], rtol=1e-5)


def test_percentile_clipping():
    images = _images()
    prep = Preprocessing(None, "percentile", percentiles=[5.0, 95.0]).fit(images)
    for c in range(2):
        pooled = np.concatenate([im[c].ravel() for im in images]).astype(np.float64)
        low, high = np.percentile(pooled, [5.0, 95.0])
        assert prep.stats["low"][c] == pytest.approx(low, rel=1e-5)
        assert prep.stats["high"][c] == pytest.approx(high, rel=1e-5)
        clipped = np.clip(pooled, low, high)
        assert prep.stats["mean"][c] == pytest.approx(clipped.mean(), rel=1e-5)
        assert prep.stats["std"][c] == pytest.approx(clipped.std(), rel=1e-5)
    image = images[0] * 3  # brighter than anything seen: clipped to the training range
    out = prep.normalise(image)
    for c in range(2):
        expected = (np.clip(image[c], prep.stats["low"][c], prep.stats["high"][c]) - prep.stats["mean"][c]) \
            / prep.stats["std"][c]
        np.testing.assert_allclose(out[c], expected, rtol=1e-5)
        assert out[c].max() == pytest.approx((prep.stats["high"][c] - prep.stats["mean"][c]) / prep.stats["std"][c],
                                             rel=1e-5)


def test_none_and_invalid_normalisation():
    image = _images()[0]
    np.testing.assert_array_equal(Preprocessing(None, "none").image(image, (1, 1, 1)), image)
    with pytest.raises(ValueError, match="normalize"):
        Preprocessing(None, "minmax")


def test_resample_to_spacing_and_restore():
    d, h, w = 8, 6, 10
    zz, yy, xx = np.meshgrid(*(np.linspace(0, 1, n) for n in (d, h, w)), indexing="ij")
    field = (0.2 + 0.6 * zz * yy + 0.1 * xx).astype(np.float32)  # smooth, in [0, 1]
    prep = Preprocessing([2.0, 1.0, 0.5], "none")
    spacing = (1.0, 2.0, 1.0)
    assert prep.grid((d, h, w), spacing) == (4, 12, 20)
    out = prep.image(field, spacing)
    assert out.shape == (1, 4, 12, 20)
    # edge-aligned grids (scipy's grid_mode): the same physical extent, values interpolated
    reference = ndimage.zoom(field, (0.5, 2, 2), order=1, mode="nearest", grid_mode=True)
    np.testing.assert_allclose(out[0], reference, atol=1e-5)
    masks = prep.masks(np.stack([field > 0.5, field > 0.3]), spacing)
    assert masks.shape == (2, 4, 12, 20) and masks.dtype == bool
    back = prep.restore(np.stack([out[0], out[0]]), (d, h, w))
    assert back.shape == (2, d, h, w)
    assert np.abs(back[0] - field).max() < 0.1 and np.abs(back[0] - field).mean() < 0.02
    assert back.min() >= 0 and back.max() <= 1
    # no spacing: nothing is resampled, restore is the identity
    same = Preprocessing(None, "none")
    assert same.image(field, spacing).shape == (1, d, h, w)
    assert same.restore(out, (4, 12, 20)) is out


def test_preprocessing_round_trips_as_dict():
    prep = Preprocessing([1, 2, 3], "zscore").fit(_images())
    data = prep.to_dict()
    assert data["spacing"] == [1.0, 2.0, 3.0] and set(data["stats"]) == {"mean", "std", "low", "high"}
    again = Preprocessing.from_dict(data)
    assert again == prep
    image = _images(seed=3)[0]
    np.testing.assert_array_equal(again.normalise(image), prep.normalise(image))
