"""Training data: cases loaded from a manifest, splits, and per-step batches for each way a model is fed.

Batches are a pure function of ``(seed, step, rank)``: every step draws from its own generator, so a run
resumed from a checkpoint sees exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

import dataclasses
import logging
import math

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from tqdm import tqdm

from seg25d.models.feeding import Feeding
from seg25d.models.slicestack import stack_indices
from seg25d.pipeline.augment import augment_sample
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import image_paths, read_image
from seg25d.pipeline.io import VolumeMeta, read_volume
from seg25d.pipeline.manifest import (LabelSpec, label_on_image_grid, label_spec_or_infer, label_value_problem,
                                      read_manifest)
from seg25d.pipeline.preprocess import Preprocessing

__all__ = ["Task", "Case", "load_cases", "split_manifest", "group_folds", "BatchSampler", "step_generator",
           "task_for"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Task:
    """What the network predicts: class names, and sigmoid (multi-label or binary) or softmax outputs."""

    spec: LabelSpec

    @property
    def classes(self) -> tuple[str, ...]:
        return self.spec.classes

    @property
    def sigmoid(self) -> bool:
        """Multi-label or single-class tasks use one sigmoid channel per class; others softmax with background."""
        return self.spec.multilabel or len(self.spec.classes) == 1

    @property
    def out_channels(self) -> int:
        return len(self.classes) + (0 if self.sigmoid else 1)


@dataclasses.dataclass
class Case:
    """A preprocessed case: image ``(C, D, H, W)`` float32 and masks ``(K, D, H, W)`` bool on the working grid."""

    case_id: str
    group: str
    image: np.ndarray
    masks: np.ndarray | None
    meta: VolumeMeta

    def arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``image`` and ``masks``, in memory (a training batch's view of the case)."""
        return self.image, self.masks

    def slices(self, index: list[int], label: int) -> tuple[np.ndarray, np.ndarray]:
        """``image[:, index]`` and ``masks[:, label]``: slices along D."""
        return self.image[:, index], self.masks[:, label]


def task_for(manifest) -> Task:
    """The manifest's class declaration (sidecar), or one inferred from its label files."""
    return Task(label_spec_or_infer(manifest))


def group_folds(groups: list[str], folds: int, seed: int = 0) -> dict[str, int]:
    """GroupKFold-like assignment: groups shuffled with ``seed``, then dealt to the fold with the fewest cases."""
    counts = pd.Series(groups).value_counts()
    order = counts.sample(frac=1.0, random_state=seed).sort_values(ascending=False, kind="stable")
    load = [0] * folds
    assign = {}
    for group, n in order.items():
        k = int(np.argmin(load))
        assign[group] = k
        load[k] += int(n)
    return assign


def split_manifest(manifest, data_config: dict, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Training and validation rows: cross-validation folds by group, the manifest's own splits, or a held-out
    share of the training groups."""
    frame = read_manifest(manifest)
    frame = frame[frame.label.notna()]
    exclude = set(data_config.get("exclude") or [])
    frame = frame[~frame.case_id.isin(exclude) & ~frame.group.isin(exclude)]
    folds = int(data_config.get("folds") or 0)
    if folds:
        fold = int(data_config.get("fold", 0))
        if not 0 <= fold < folds:
            raise InputError("data.fold", f"must be in 0..{folds - 1} for {folds} folds, got {fold}")
        pool = frame[frame.split != "test"]
        if pool.group.nunique() < folds:
            raise InputError(manifest, f"{pool.group.nunique()} groups (outside the test split) cannot make "
                                       f"{folds} folds")
        assign = group_folds(list(pool.group), folds, seed)
        is_val = pool.group.map(assign) == fold
        return pool[~is_val], pool[is_val]
    train, val = frame[frame.split == "train"], frame[frame.split == "val"]
    share = float(data_config.get("val_fraction") or 0)
    if val.empty and share > 0:
        groups = train.group.drop_duplicates().sample(frac=1.0, random_state=seed)
        held = set(groups.iloc[: max(1, math.ceil(share * len(groups)))])
        train, val = train[~train.group.isin(held)], train[train.group.isin(held)]
    if train.empty:
        raise InputError(manifest, "no labelled training cases (split 'train')")
    return train, val


def load_cases(rows: pd.DataFrame, task: Task, preprocessing: Preprocessing, progress: bool = True,
               resample_labels: bool = False) -> list[Case]:
    """Read, resample and normalise every case of ``rows`` (labels decoded to per-class masks). A label on
    another grid than its image is an error, or with ``resample_labels`` resampled onto the image's grid."""
    cases = []
    for row in tqdm(list(rows.itertuples()), desc="loading", unit="case", disable=not progress, leave=False):
        image = read_image(image_paths(row))  # (C, D, H, W): one channel per modality
        masks = None
        if row.label:
            label = read_volume(row.label)
            array = label_on_image_grid(label, image.meta, resample_labels)
            problem = label_value_problem(array, task.spec)
            if problem:
                raise InputError(row.label, problem)
            masks = preprocessing.masks(task.spec.masks(array), image.meta.spacing)
        cases.append(Case(row.case_id, row.group, preprocessing.image(image.array, image.meta.spacing), masks,
                          image.meta))
    return cases


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """The generator of one training step: batches and augmentation depend only on (seed, step, rank)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))


class BatchSampler:
    """Draws a training batch per step for a model's :class:`~seg25d.models.feeding.Feeding`, with augmentation.

    - ``volume``/``patches``: ``batch_size`` whole volumes (``patches``: random 3D patches of ``patch_size`` when it
      is set), padded to a common shape.
    - ``slices``/``stacks``: ``slices_per_step`` slices along D (with ``slices``/``stride`` neighbours as
      channels for stacks), a ``foreground_fraction`` of them from slices holding foreground.

    Returns ``(x, y)`` tensors: ``x`` (N, C', ...) float and ``y`` masks (N, K, ...) bool (a quarter of a float
    mask's bytes through worker shared memory and to the GPU; the trainer makes them float on its device).
    """

    def __init__(self, cases: list[Case], feeding: Feeding, config: dict):
        self.cases, self.feeding = cases, feeding
        self.data, self.augment, self.train = config["data"], config["augment"], config["train"]
        if not feeding.three_d:
            self.depths = [c.image.shape[1] for c in cases]
            self.slices = [(i, d) for i, depth in enumerate(self.depths) for d in range(depth)]
            self.fg_slices = [(i, d) for i, c in enumerate(cases) for d in np.flatnonzero(c.masks.any(axis=(0, 2, 3)))]

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        if self.feeding.three_d:
            items = [self._volume_item(generator) for _ in range(int(self.train["batch_size"]))]
        else:
            items = [self._slice_item(generator) for _ in range(int(self.train["slices_per_step"]))]
        items = [self._augmented(x, y, generator) for x, y in items]
        return _pad_stack([x for x, _ in items]), _pad_stack([y for _, y in items])

    def largest_batch_nbytes(self) -> int:
        """An upper bound of a batch's bytes, ``x`` and ``y`` together (augmentations keep shapes)."""
        shapes = np.array([c.image.shape for c in self.cases])  # cached cases: read from the file headers
        channels, size = int(shapes[:, 0].max()), shapes[:, 1:].max(axis=0).tolist()
        f = self.feeding
        if f.three_d:
            n = int(self.train["batch_size"])
            patch = (self.data.get("patch_size") or []) if f.kind == "patches" else []
            size = [min(p, s) for p, s in zip(patch, size)] if patch else size
        else:
            n, channels, size = int(self.train["slices_per_step"]), channels * f.slices, size[1:]
        classes = self.cases[0].masks.shape[0]
        return n * int(np.prod(size)) * (channels * self.cases[0].image.dtype.itemsize + classes)  # masks: bool

    def _randint(self, n: int, generator) -> int:
        return int(torch.randint(n, (1,), generator=generator))

    def _volume_item(self, generator):
        case = self.cases[self._randint(len(self.cases), generator)]
        image, masks = case.arrays()
        x, y = torch.from_numpy(image), torch.from_numpy(masks)
        patch = (self.data.get("patch_size") or []) if self.feeding.kind == "patches" else []
        if patch:
            x, y = self._crop(x, y, [min(p, s) for p, s in zip(patch, x.shape[1:])], generator)
        return x, y

    def _crop(self, x, y, patch, generator):
        """A random patch; a ``foreground_fraction`` of them centred on a random foreground voxel."""
        centre = None
        if torch.rand((), generator=generator) < float(self.data["foreground_fraction"]):
            voxels = torch.nonzero(y.any(0))
            if len(voxels):
                centre = voxels[self._randint(len(voxels), generator)]
        starts = []
        for axis, (size, n) in enumerate(zip(patch, x.shape[1:])):
            if centre is not None:
                starts.append(min(max(int(centre[axis]) - size // 2, 0), n - size))
            else:
                starts.append(self._randint(n - size + 1, generator))
        sl = (slice(None),) + tuple(slice(s, s + p) for s, p in zip(starts, patch))
        return x[sl], y[sl]

    def _slice_item(self, generator):
        pool = self.fg_slices if (self.fg_slices and torch.rand((), generator=generator)
                                  < float(self.data["foreground_fraction"])) else self.slices
        i, d = pool[self._randint(len(pool), generator)]
        case, f = self.cases[i], self.feeding
        index = (stack_indices(self.depths[i], torch.tensor([d]), f.slices, f.stride, f.edge)[0].tolist()
                 if f.kind == "stacks" else [d])
        image, masks = case.slices(index, d)
        return torch.from_numpy(image.reshape(-1, *image.shape[2:])), torch.from_numpy(masks)

    def _augmented(self, x, y, generator):
        aug = self.augment
        if not aug.get("enabled", True):
            return x, y
        spatial = x.dim() - 1  # 3 for volumes, 2 for slices
        flips = []
        for axis in aug.get("flip_axes") or []:
            axis = int(axis) - (3 - spatial)  # volume axis (0=D,1=H,2=W) -> trailing dims of a slice
            if axis >= 0 and torch.rand((), generator=generator) < 0.5:
                flips.append(1 + axis)
        if flips:  # one pass over the data for all the axes drawn
            x, y = x.flip(flips), y.flip(flips)
        degrees = float(aug.get("rotate_degrees") or 0)
        if degrees:
            angle = math.radians(float((torch.rand((), generator=generator) * 2 - 1) * degrees))
            x, y = _rotate_hw(x, angle, "bilinear"), _rotate_hw(y, angle, "nearest")
        x, y = augment_sample(x, y, aug, generator)  # shift, zoom, grid distortion, brightness, contrast
        scale = float(aug.get("scale_intensity") or 0)
        if scale:
            x = x * float(1 + (torch.rand((), generator=generator) * 2 - 1) * scale)
        gamma = float(aug.get("gamma") or 0)
        if gamma:
            g = math.exp(float((torch.rand((), generator=generator) * 2 - 1) * gamma))
            lo, hi = x.amin(), x.amax()
            x = ((x - lo) / (hi - lo + 1e-8)).pow(g) * (hi - lo) + lo
        return x.contiguous(), y.contiguous()


def _rotate_hw(t: torch.Tensor, angle: float, mode: str) -> torch.Tensor:
    """Rotate the trailing (H, W) plane of ``(C, [D,] H, W)`` about its centre (masks: bool, ``nearest``)."""
    if t.dtype == torch.bool:
        return _rotate_hw(t.float(), angle, "nearest") > 0.5
    c, s = math.cos(angle), math.sin(angle)
    h, w = t.shape[-2:]
    flat = t.reshape(-1, 1, h, w) if t.dim() == 4 else t[None]
    # affine_grid works in coordinates normalised per axis: scale the off-diagonal terms so that the
    # rotation is one in pixels, not a shear, when H != W
    theta = torch.tensor([[c, -s * h / w, 0.0], [s * w / h, c, 0.0]], dtype=t.dtype).expand(flat.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)
    out = F.grid_sample(flat, grid, mode=mode, padding_mode="border" if mode == "bilinear" else "zeros",
                        align_corners=False)
    return out.reshape(t.shape)


def _pad_stack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Stack tensors of possibly different spatial sizes, zero-padding each at the end to the largest."""
    if all(t.shape == tensors[0].shape for t in tensors):
        return torch.stack(tensors)
    shape = [max(s) for s in zip(*(t.shape for t in tensors))]
    out = tensors[0].new_zeros(len(tensors), *shape)
    for i, t in enumerate(tensors):
        out[(i,) + tuple(slice(0, n) for n in t.shape)] = t
    return out
