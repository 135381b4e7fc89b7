"""Planning: a dataset fingerprint and the preprocessing and input sizes derived from it, as nnU-Net plans.

``seg25d train`` plans at its start (``plan.json`` in the run folder, ``"plan"`` in the checkpoints);
``seg25d plan M.csv`` prints the same plan without training. From the training cases:

- **fingerprint**: each case's native spacing and shape, and per channel (modality) the intensity statistics of
  the foreground voxels (any class; 10,000 sampled per case; on the target grid, where the cases are loaded
  to so that the raw volumes are never all in memory): mean, sd, 0.5/50/99.5 percentiles.
- **target spacing**: the median spacing per axis. For strongly anisotropic data (the median's largest spacing
  more than 3x its smallest) the slow axis takes the 10th percentile of its spacings instead (not below the
  other axes' spacing), as nnU-Net does, so thick-slice outliers do not coarsen every case.
- **normalisation per channel**: ``CT`` channels (the sidecar's ``channels``) -> ``ct``: clip to the foreground's
  ``data.percentiles`` (0.5, 99.5), then z-score with the foreground mean and sd of the whole dataset; every
  other modality -> ``case_zscore`` (each case to mean 0, sd 1).
- **input size and batch per model**: the median shape on the target grid, shrunk (largest axis first) until a
  sample fits the memory budget, rounded to a multiple of 16; the batch is what the budget then holds
  (1 to 4 volumes or 3D patches, 1 to 32 slices). The memory estimate is deliberately simple:
  ``4 bytes x base_channels x F`` per input voxel, ``F`` = 24 for the CNNs (full-resolution feature maps kept
  for the backward pass, their gradients and the pyramid's coarser levels) and 8 for ``projection25d``
  (its 2D views hold fewer values than the volume); the budget is a quarter of the device's memory (the
  CPU's RAM: training runs on the CPU).

Config overrides: ``data.spacing`` (``"auto"``: the plan's; ``[]``: each volume's own; 3 numbers),
``data.normalize`` (``"auto"``: the plan's; one name for every channel, or a list with one per channel),
``data.patch_size = "auto"`` (the plan's patch and ``train.batch_size`` for the 3D CNNs).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

import numpy as np

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io.base import VolumeMeta
from seg25d.pipeline.preprocess import NORMALIZATIONS, Preprocessing
from seg25d.pipeline.resample import target_shape

__all__ = ["Plan", "fingerprint", "target_spacing", "make_plan", "prepare_training_data", "plan_from_manifest",
           "working_meta", "memory_budget_mb", "planned_config", "resolve_spacing"]

SAMPLES_PER_CASE = 10_000
#: at most this many samples in all, so that planning's memory does not grow with the number of cases
SAMPLES_IN_ALL = 1_000_000


def _samples_per_case(cases: int) -> int:
    return max(1, min(SAMPLES_PER_CASE, SAMPLES_IN_ALL // max(1, cases)))
ANISOTROPY = 3.0
MEMORY_FACTOR = {"volume": 8, "patches": 24, "slices": 24, "stacks": 24}
BATCH_LIMITS = {"volume": 4, "patches": 4, "slices": 32, "stacks": 32}


@dataclasses.dataclass
class Plan:
    """The fingerprint and what was decided from it (see the module docstring); a plain dict in checkpoints."""

    channels: list[str]
    fingerprint: dict
    spacing: list[float] | None  # applied target spacing (D, H, W) mm; None: each volume's own
    normalize: list[str]  # applied normalisation per channel
    stats: dict  # per-channel foreground statistics for "ct" channels: mean, std, low, high
    model: dict  # name, family, input (patch / slice / volume shape), batch, memory_budget_mb, estimate_mb
    planned: dict = dataclasses.field(default_factory=dict)  # the plan's own choices before config overrides

    def preprocessing(self, percentiles: Sequence[float] = (0.5, 99.5)) -> Preprocessing:
        return Preprocessing(self.spacing, list(self.normalize), list(percentiles), dict(self.stats))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Plan":
        return cls(**data)

    def summary(self) -> str:
        fp = self.fingerprint
        spacing = "own grid of each volume" if self.spacing is None else " x ".join(f"{s:.3g}" for s in self.spacing) + " mm"
        norms = ", ".join(f"{c}: {n}" for c, n in zip(self.channels, self.normalize))
        m = self.model
        shape = " x ".join(map(str, m["input"]))
        return "\n".join([
            f"plan: {fp['cases']} training cases, median shape {' x '.join(map(str, fp['median_shape']))} at "
            f"{' x '.join(f'{s:.3g}' for s in fp['median_spacing'])} mm (D x H x W)",
            f"  target spacing: {spacing}" + (" (anisotropic: slow axis at its 10th percentile)"
                                               if fp.get("anisotropic") else ""),
            f"  normalisation: {norms}",
            f"  {m['name']} ({m['family']}): input {shape}, batch {m['batch']} "
            f"(estimate {m['estimate_mb']:.0f} MB of a {m['memory_budget_mb']:.0f} MB budget)",
        ])


def working_meta(meta: VolumeMeta, shape: Sequence[int]) -> VolumeMeta:
    """The geometry of ``meta``'s volume resampled to ``shape`` (edge-aligned grids, as resampling does): its
    ``spacing`` is the working spacing in mm."""
    factor = np.asarray(meta.shape, dtype=float) / np.asarray(shape, dtype=float)
    affine = np.array(meta.affine, dtype=float)
    affine[:3, 3] += affine[:3, :3] @ ((factor - 1) / 2)
    affine[:3, :3] *= factor[None, :]
    return meta.replace(shape=tuple(int(s) for s in shape), affine=affine)


def fingerprint(images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None], spacings: Sequence[Sequence[float]],
                shapes: Sequence[Sequence[int]], seed: int = 0) -> dict:
    """Native spacings and shapes of the training cases, and per-channel foreground intensity statistics of their
    ``(C, D, H, W)`` images (on the grid they were loaded to)."""
    rng = np.random.default_rng(seed)
    channels = images[0].shape[0]
    per_case = _samples_per_case(len(images))
    samples = [[] for _ in range(channels)]
    for image, mask in zip(images, masks):
        fg = mask.any(0) if mask is not None and mask.any() else np.ones(image.shape[1:], bool)
        index = np.flatnonzero(fg)
        pick = rng.choice(index, size=min(len(index), per_case), replace=False)
        for c in range(channels):
            samples[c].append(image[c].ravel()[pick])
    intensity = []
    for c in range(channels):
        values = np.concatenate(samples[c]).astype(np.float64)
        p = np.percentile(values, [0.5, 50, 99.5])
        intensity.append({"mean": float(values.mean()), "std": float(values.std()), "p00_5": float(p[0]),
                          "median": float(p[1]), "p99_5": float(p[2]), "min": float(values.min()),
                          "max": float(values.max())})
    spacings = np.asarray(spacings, dtype=float)
    shapes = np.asarray(shapes, dtype=int)
    return {"cases": len(images), "spacings": spacings.tolist(), "shapes": shapes.tolist(),
            "median_spacing": np.median(spacings, 0).tolist(), "median_shape": [int(v) for v in np.median(shapes, 0)],
            "foreground_intensity": intensity}


def target_spacing(spacings: Sequence[Sequence[float]]) -> tuple[list[float], bool]:
    """Median spacing per axis; for anisotropic data the slow axis at its 10th percentile (see module doc)."""
    spacings = np.asarray(spacings, dtype=float)
    target = np.median(spacings, 0)
    slow = int(np.argmax(target))
    others = [a for a in range(3) if a != slow]
    anisotropic = bool(target[slow] > ANISOTROPY * target[others].min())
    if anisotropic:
        target[slow] = max(float(np.percentile(spacings[:, slow], 10)), float(target[others].max()))
    return [float(s) for s in target], anisotropic


def memory_budget_mb(device: str = "cpu") -> float:
    """The memory a training step may use, in MB: most of a GPU's memory, a quarter of the machine's RAM on the
    CPU (the cases, workers and the rest of the machine share it)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory * 0.8 / 2**20
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GB
        total = 8 * 2**30
    return total / 4 / 2**20


def _training_device(config: dict) -> str:
    from seg25d.pipeline.device import resolve_device

    return str(resolve_device(config["train"].get("device", "auto")))


def _base_channels(options: dict) -> int:
    for source in (options, options.get("unet") or {}, options.get("backbone_options") or {}):
        if "base_channels" in source:
            return int(source["base_channels"])
    if options.get("channels"):  # MONAI's UNet
        return int(options["channels"][0])
    return 32


def _plan_input(family: str, shape: Sequence[int], options: dict, budget_mb: float) -> tuple[list[int], int, float]:
    """(input shape, batch, estimate MB per batch) for a model family on a working grid of median ``shape``."""
    per_voxel = 4 * _base_channels(options) * MEMORY_FACTOR[family]  # bytes
    shape = [int(s) for s in shape]
    if family in ("slices", "stacks"):
        shape = shape[1:]
    elif family == "patches":
        while np.prod(shape) * per_voxel / 2**20 > budget_mb and max(shape) > 16:
            axis = int(np.argmax(shape))
            shape[axis] = max(16, int(shape[axis] * 0.9))
        shape = [max(16, (s // 16) * 16) if s >= 16 else s for s in shape]
    sample_mb = float(np.prod(shape)) * per_voxel / 2**20
    batch = int(max(1, min(BATCH_LIMITS[family], budget_mb // max(sample_mb, 1e-9))))
    return shape, batch, sample_mb * batch


def resolve_spacing(value, spacings: Sequence[Sequence[float]] | None = None) -> list[float] | None:
    """``data.spacing`` as applied: ``"auto"`` -> the target spacing of the native ``spacings``; ``[]`` -> None."""
    if value == "auto":
        return target_spacing(spacings)[0]
    if value and (isinstance(value, str) or len(value) != 3):
        raise InputError("data.spacing", f"must be \"auto\", [] or 3 numbers (mm, D H W), got {value!r}")
    return [float(s) for s in value] if value else None


def make_plan(images, masks, spacings, shapes, channels: Sequence[str], config: dict) -> Plan:
    """The plan for training images ``(C, D, H, W)`` with their masks (on the grid ``config``'s ``data.spacing``
    gives), their native spacings and shapes, and the declared channel modalities; ``config``'s overrides applied."""
    from seg25d.models import build, feeding_of
    from seg25d.models.projection25d import resolve_scale

    channels = list(channels)
    count = images[0].shape[0]
    if channels == ["image"] and count > 1:  # no modalities declared
        channels = [f"image_{c}" for c in range(count)]
    if len(channels) != count:
        raise InputError(config["data"]["manifest"], f"the images have {count} channel(s); the sidecar declares "
                                                     f"{len(channels)} ({', '.join(channels)})")
    fp = fingerprint(images, masks, spacings, shapes, seed=int(config["train"]["seed"]))
    planned_spacing, fp["anisotropic"] = target_spacing(fp["spacings"])
    planned_norm = ["ct" if c.strip().lower() == "ct" else "case_zscore" for c in channels]
    data = config["data"]
    spacing = resolve_spacing(data["spacing"], fp["spacings"])
    normalize = data["normalize"]
    if normalize == "auto":
        normalize = planned_norm
    elif isinstance(normalize, str):
        normalize = [normalize] * len(channels)
    normalize = [str(n) for n in normalize]
    if len(normalize) != len(channels) or any(n not in NORMALIZATIONS for n in normalize):
        raise InputError("data.normalize", f"must be \"auto\", one of {NORMALIZATIONS} or a list of them, one per "
                                           f"channel ({len(channels)}), got {data['normalize']!r}")
    low_q, high_q = (float(q) for q in data["percentiles"])
    stats = _foreground_stats(images, masks, low_q, high_q) if "ct" in normalize else {}
    median = fp["median_shape"] if spacing is None else list(
        target_shape(fp["median_shape"], fp["median_spacing"], spacing))
    name, options = config["model"]["name"], dict(config["model"]["options"])
    if options.get("scale") == "auto":  # projection25d: the working grid decides, as in training
        options["scale"] = resolve_scale("auto", median)
    try:
        family = feeding_of(build(name, count, 1, **options)).kind
    except ValueError as err:
        raise InputError("model", str(err)) from None
    budget = memory_budget_mb(_training_device(config))
    shape, batch, estimate = _plan_input(family, median, options, budget)
    model = {"name": name, "family": family, "input": shape, "batch": batch, "memory_budget_mb": round(budget),
             "estimate_mb": round(estimate, 1)}
    return Plan(channels, fp, spacing, normalize, stats, model,
                planned={"spacing": planned_spacing, "normalize": planned_norm})


def _foreground_stats(images, masks, low_q: float, high_q: float) -> dict:
    """Per channel: the foreground's percentiles and the mean and sd of the clipped foreground (all cases)."""
    out = {"mean": [], "std": [], "low": [], "high": []}
    rng = np.random.default_rng(0)
    per_case = _samples_per_case(len(images))
    for c in range(images[0].shape[0]):
        values = []
        for image, mask in zip(images, masks):
            fg = image[c][mask.any(0)] if mask is not None and mask.any() else image[c].ravel()
            values.append(rng.choice(fg, size=min(fg.size, per_case), replace=False))
        values = np.concatenate(values).astype(np.float64)
        low, high = (float(np.percentile(values, q)) for q in (low_q, high_q))
        clipped = np.clip(values, low, high)
        out["mean"].append(float(clipped.mean()))
        out["std"].append(float(clipped.std()) or 1.0)
        out["low"].append(low)
        out["high"].append(high)
    return out


def planned_config(config: dict, plan: Plan) -> dict:
    """``config`` with ``data.patch_size = "auto"`` resolved: the plan's patch and batch for the 3D CNNs, whole
    volumes (``[]``) for other models."""
    if config["data"].get("patch_size") != "auto":
        return config
    config = {section: dict(values) if isinstance(values, dict) else values for section, values in config.items()}
    patches = plan.model["family"] == "patches"
    config["data"]["patch_size"] = list(plan.model["input"]) if patches else []
    if patches:
        config["train"]["batch_size"] = int(plan.model["batch"])
    return config


def _load_options(config: dict) -> dict:
    """Options of ``load_cases`` that change the arrays (labels resampled onto their image's grid)."""
    return {"resample_labels": bool(config["data"].get("resample_labels", False))}


def _load_planned(config: dict, task, rows, progress: bool):
    """Training cases loaded onto the planned grid (``data.spacing``; ``"auto"`` reads the native spacings first),
    and their native spacings and shapes."""
    from seg25d.pipeline.data import load_cases
    from seg25d.pipeline.images import image_paths, read_image

    value = config["data"]["spacing"]
    native = [read_image(image_paths(r)).meta.spacing for r in rows.itertuples()] if value == "auto" else None
    load = Preprocessing(resolve_spacing(value, native), "none")
    cases = load_cases(rows, task, load, progress=progress, **_load_options(config))
    return load, cases, [c.meta.spacing for c in cases], [c.meta.shape for c in cases]


class _Arrays(Sequence):
    """One array of each cached case (``image`` or ``masks``), opened when asked for: one case in memory at a time."""

    def __init__(self, cases, attribute: str):
        self.cases, self.attribute = cases, attribute

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, i: int):
        return getattr(self.cases[i], self.attribute)


def _prepare_cached(config: dict, task, train_rows, val_rows, progress: bool, root, stats):
    """:func:`prepare_training_data` through the on-disk cache: the training cases are cached on the planned grid
    unnormalised, planned and fitted from there one case at a time, then every case is cached normalised."""
    from seg25d.pipeline.cache import CacheStats, cache_cases, native_spacings
    from seg25d.pipeline.images import declared_channels

    options = _load_options(config)
    value = config["data"]["spacing"]
    load = Preprocessing(resolve_spacing(value, native_spacings(train_rows, root) if value == "auto" else None), "none")
    unnormalised = CacheStats()
    raw = cache_cases(train_rows, task, load, root, progress, unnormalised, options)
    if stats is not None:
        stats.seconds += unnormalised.seconds
    plan = make_plan(_Arrays(raw, "image"), _Arrays(raw, "masks"), [c.meta.spacing for c in raw],
                     [c.meta.shape for c in raw], declared_channels(config["data"]["manifest"]), config)
    prep = plan.preprocessing(config["data"]["percentiles"])
    prep.fit(_Arrays(raw, "image"))
    train_cases = cache_cases(train_rows, task, prep, root, progress, stats, options)
    val_cases = cache_cases(val_rows, task, prep, root, progress, stats, options)
    if len({c.image.shape[0] for c in train_cases + val_cases}) > 1:
        raise InputError(config["data"]["manifest"], "cases have different numbers of image channels")
    for case in train_cases + val_cases:
        case.meta = working_meta(case.meta, case.image.shape[1:])
    return prep, plan, train_cases, val_cases


def prepare_training_data(config: dict, task, train_rows, val_rows, progress: bool = True, cache=None, stats=None):
    """Plan from the training cases, then load, resample and normalise every case as planned.

    Returns ``(preprocessing, plan, train_cases, val_cases)``; each case's ``meta`` is its working grid's
    geometry (``case.meta.spacing``: the spacing the network sees, in mm). With a ``cache`` folder the cases are
    memory-mapped from there (:mod:`seg25d.pipeline.cache`), with the same arrays.
    """
    from seg25d.pipeline.data import load_cases
    from seg25d.pipeline.images import declared_channels

    if cache is not None:
        return _prepare_cached(config, task, train_rows, val_rows, progress, cache, stats)
    load, train_cases, spacings, shapes = _load_planned(config, task, train_rows, progress)
    val_cases = load_cases(val_rows, task, load, progress=progress, **_load_options(config))
    if len({c.image.shape[0] for c in train_cases + val_cases}) > 1:
        raise InputError(config["data"]["manifest"], "cases have different numbers of image channels")
    plan = make_plan([c.image for c in train_cases], [c.masks for c in train_cases], spacings, shapes,
                     declared_channels(config["data"]["manifest"]), config)
    prep = plan.preprocessing(config["data"]["percentiles"])
    for case in train_cases + val_cases:
        case.meta = working_meta(case.meta, case.image.shape[1:])
    prep.fit([c.image for c in train_cases])
    for case in train_cases + val_cases:
        case.image = prep.normalise(case.image)
    return prep, plan, train_cases, val_cases


def plan_from_manifest(config: dict) -> Plan:
    """The plan ``seg25d train`` would make for ``config`` (its manifest's training cases)."""
    from seg25d.pipeline.data import split_manifest, task_for
    from seg25d.pipeline.images import declared_channels

    manifest = config["data"]["manifest"]
    task = task_for(manifest)
    train_rows, _ = split_manifest(manifest, config["data"], seed=int(config["train"]["seed"]))
    _, cases, spacings, shapes = _load_planned(config, task, train_rows, progress=False)
    return make_plan([c.image for c in cases], [c.masks for c in cases], spacings, shapes,
                     declared_channels(manifest), config)
