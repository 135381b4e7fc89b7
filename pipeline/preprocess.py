"""Preprocessing shared by training and prediction: resampling and intensity normalisation.

Everything a prediction needs to reproduce the training input is in :class:`Preprocessing`, which the
checkpoint stores as a plain dict. Arrays are channel-first ``(C, D, H, W)``; masks ``(K, D, H, W)``.
Volumes are not reoriented: the array keeps the file's voxel order (see :mod:`seg25d.pipeline.io.base`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from seg25d.pipeline.resample import resample_image, resample_masks, target_shape

__all__ = ["Preprocessing", "NORMALIZATIONS"]

NORMALIZATIONS = ("case_zscore", "zscore", "percentile", "ct", "none")


@dataclasses.dataclass
class Preprocessing:
    """Resampling target and intensity normalisation.

    Normalisations: ``case_zscore`` (each volume to mean 0, sd 1: MR with arbitrary scale), ``zscore``
    (the training set's mean and sd), ``percentile`` (clip to the training set's percentiles, then its mean
    and sd), ``ct`` (clip to the percentiles of the dataset's foreground, then its foreground mean and sd:
    the statistics come from the plan, :mod:`seg25d.pipeline.planning`), ``none``. ``normalize`` is one name
    for every channel or a list with one per channel (modality). ``zscore``/``percentile`` statistics come
    from :meth:`fit` on the training images.
    """

    spacing: list[float] | None = None
    normalize: str | list[str] = "case_zscore"
    percentiles: list[float] = dataclasses.field(default_factory=lambda: [0.5, 99.5])
    stats: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if isinstance(self.normalize, (list, tuple)):
            self.normalize = [str(n) for n in self.normalize]
        for name in (self.normalize if isinstance(self.normalize, list) else [self.normalize]):
            if name not in NORMALIZATIONS:
                raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {name!r}")
        self.spacing = [float(s) for s in self.spacing] if self.spacing else None

    def scheme(self, channel: int) -> str:
        """The normalisation of one channel."""
        if isinstance(self.normalize, list):
            if channel >= len(self.normalize):
                raise ValueError(f"normalize names {len(self.normalize)} channel(s); the image has more")
            return self.normalize[channel]
        return self.normalize

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Preprocessing":
        return cls(**data)

    def grid(self, shape: Sequence[int], spacing: Sequence[float]) -> tuple[int, ...]:
        """The working grid's shape for a volume of ``shape`` at ``spacing``."""
        return tuple(shape) if self.spacing is None else target_shape(shape, spacing, self.spacing)

    def fit(self, images: list[np.ndarray]) -> "Preprocessing":
        """Collect dataset statistics from training images (each ``(C, D, H, W)``, already resampled) for the
        ``zscore``/``percentile`` channels; other channels keep theirs (``ct``: from the plan)."""
        channels = images[0].shape[0]
        fitted = [c for c in range(channels) if self.scheme(c) in ("zscore", "percentile")]
        if not fitted:
            return self
        stats = {k: list(self.stats.get(k) or [0.0] * channels) for k in ("mean", "std", "low", "high")}
        rng = np.random.default_rng(0)
        per_image = max(1, min(100_000, 4_000_000 // len(images)))  # memory does not grow with the cases
        for c in fitted:
            sample = np.concatenate([rng.choice(im[c].ravel(), size=min(im[c].size, per_image), replace=False)
                                     for im in images])
            low, high = (float(np.percentile(sample, q)) for q in self.percentiles)
            if self.scheme(c) == "percentile":
                sample = np.clip(sample, low, high)
            stats["mean"][c], stats["std"][c] = float(sample.mean()), float(sample.std()) or 1.0
            stats["low"][c], stats["high"][c] = low, high
        self.stats = stats
        return self

    def image(self, array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Raw ``(D, H, W)`` or ``(C, D, H, W)`` image -> resampled, normalised float32 ``(C, D', H', W')``."""
        return self.normalise(self.resample(array, spacing))

    def resample(self, array: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Raw ``(D, H, W)`` or ``(C, D, H, W)`` image -> float32 ``(C, D', H', W')`` on the working grid."""
        image = np.asarray(array, dtype=np.float32)
        if image.ndim == 3:
            image = image[None]
        shape = self.grid(image.shape[1:], spacing)
        if tuple(shape) != tuple(image.shape[1:]):
            image = resample_image(image, shape, order=1)
        return image

    def normalise(self, image: np.ndarray) -> np.ndarray:
        out = np.empty_like(image, dtype=np.float32)
        for c, channel in enumerate(image):
            scheme = self.scheme(c)
            if scheme == "case_zscore":
                out[c] = (channel - channel.mean()) / max(float(channel.std()), 1e-8)
            elif scheme == "none":
                out[c] = channel
            else:
                if scheme in ("percentile", "ct"):
                    channel = np.clip(channel, self.stats["low"][c], self.stats["high"][c])
                out[c] = (channel - self.stats["mean"][c]) / self.stats["std"][c]
        return out

    def masks(self, masks: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """Boolean masks ``(K, D, H, W)`` on the working grid."""
        shape = self.grid(masks.shape[1:], spacing)
        if tuple(shape) == tuple(masks.shape[1:]):
            return masks.astype(bool)
        return resample_masks(masks, shape, method="linear")

    def restore(self, probabilities: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        """Per-class probabilities on the working grid -> the original grid ``shape`` (linear)."""
        if tuple(probabilities.shape[1:]) == tuple(shape):
            return probabilities
        return np.clip(resample_image(probabilities, shape, order=1), 0.0, 1.0)
