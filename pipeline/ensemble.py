"""Several checkpoints (e.g. the folds of a cross-validation) predicting as one, with post-processing.

Each checkpoint preprocesses the input as it was trained and restores its probabilities to the input's grid;
the ensemble averages them there, thresholds, and keeps the largest connected component of the chosen classes.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.postprocess import keep_largest
from seg25d.pipeline.volume_inference import probabilities_to_masks

__all__ = ["Ensemble"]


class Ensemble:
    """``Ensemble(checkpoints, largest_component)``: the interface of :class:`~seg25d.pipeline.predict.Predictor`.

    ``largest_component``: class names, ``["all"]``, ``["auto"]`` (the classes each checkpoint's training chose,
    by majority over the checkpoints) or None.
    """

    def __init__(self, checkpoints: Sequence[str | os.PathLike], largest_component: Sequence[str] | None = None,
                 device: str = "auto", precision: str | None = None):
        from seg25d.pipeline.predict import Predictor

        checkpoints = [checkpoints] if isinstance(checkpoints, (str, os.PathLike)) else list(checkpoints)
        self.checkpoints = checkpoints
        self.members = [Predictor(c, device, precision) for c in checkpoints]  # all on the one device
        first = self.members[0]
        for path, member in zip(checkpoints[1:], self.members[1:]):
            if member.spec != first.spec or member.sigmoid != first.sigmoid:
                raise InputError(path, f"predicts classes {member.spec.to_dict()}, {checkpoints[0]} predicts "
                                       f"{first.spec.to_dict()}; an ensemble needs the same classes")
            if member.in_channels != first.in_channels:
                raise InputError(path, f"takes {member.in_channels} image channel(s), {checkpoints[0]} takes "
                                       f"{first.in_channels}")
        self.spec, self.sigmoid, self.in_channels = first.spec, first.sigmoid, first.in_channels
        self.device, self.precision = first.device, first.precision
        self.keep = self._largest_component_classes(largest_component or [])

    def _largest_component_classes(self, names: Sequence[str]) -> list[int]:
        classes = list(self.spec.classes)
        if list(names) == ["all"]:
            return list(range(len(classes)))
        if list(names) == ["auto"]:
            votes = np.zeros(len(classes))
            for path, member in zip(self.checkpoints, self.members):
                if member.postprocessing is None:
                    raise InputError(path, "holds no largest-component decision (a run without validation cases); "
                                           "name the classes instead of auto")
                votes += [c in member.postprocessing["largest_component"] for c in classes]
            return [k for k in range(len(classes)) if votes[k] > len(self.members) / 2]
        unknown = [n for n in names if n not in classes]
        if unknown:
            raise InputError("--largest-component", f"unknown class(es) {', '.join(unknown)}; the model predicts "
                                                    f"{', '.join(classes)} (or use auto, all)")
        return [classes.index(n) for n in names]

    @property
    def largest_component(self) -> list[str]:
        return [self.spec.classes[k] for k in self.keep]

    def probabilities(self, volume, tta: bool = False) -> np.ndarray:
        """Mean per-class probabilities ``(K, D, H, W)`` of the members on the volume's own grid."""
        channels = 1 if volume.array.ndim == 3 else volume.array.shape[0]
        if channels != self.in_channels:
            raise InputError(volume.meta.path, f"{channels} image channel(s) (a 4D image or channel files); the "
                                               f"model takes {self.in_channels}")
        total = None
        for member in self.members:
            probs = member.probabilities(volume, tta=tta)
            total = probs.astype(np.float32) if total is None else total + probs
        return total / len(self.members)

    def label(self, probabilities: np.ndarray, threshold: float = 0.5) -> np.ndarray:
        masks = probabilities_to_masks(probabilities, self.sigmoid, threshold)
        return self.spec.encode(keep_largest(masks, self.keep) if self.keep else masks)
