"""Post-processing of predicted masks: keep each class's largest connected component, where that helps.

``auto`` decides per class on the validation cases at the end of training (the best checkpoint's predictions,
26-connectivity): a class keeps only its largest component when that raised its mean validation Dice. The
decision is stored in the run's checkpoints (``"postprocessing"``) for ``seg25d predict --largest-component auto``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from seg25d.pipeline.checkpoint import load_checkpoint, save_checkpoint
from seg25d.pipeline.metrics import dice_per_class

__all__ = ["largest_component", "keep_largest", "decide_largest_component", "record_postprocessing"]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of a boolean volume (the mask itself when empty)."""
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def keep_largest(masks: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Masks ``(K, ...)`` with the classes at indices ``classes`` reduced to their largest component."""
    masks = np.array(masks, dtype=bool)
    for k in classes:
        masks[k] = largest_component(masks[k])
    return masks


def decide_largest_component(predictions: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                             classes: Sequence[str]) -> dict:
    """Which classes gain mean Dice from keeping their largest component, given predicted and true masks."""
    plain = np.mean([dice_per_class(p, t) for p, t in zip(predictions, truths)], axis=0)
    kept = np.mean([dice_per_class(keep_largest(p, range(len(classes))), t) for p, t in zip(predictions, truths)],
                   axis=0)
    return {"largest_component": [c for c, a, b in zip(classes, plain, kept) if b > a],
            "val_dice": {c: float(a) for c, a in zip(classes, plain)},
            "val_dice_largest_component": {c: float(b) for c, b in zip(classes, kept)}}


def record_postprocessing(run_dir: str | os.PathLike, cases, task, device="cpu") -> dict:
    """Decide ``auto`` largest-component post-processing with the run's best checkpoint on ``cases`` (preprocessed,
    with masks), predicting on ``device``, and store it in ``best.pt`` and ``last.pt``."""
    from seg25d.pipeline.checkpoint import load_model
    from seg25d.pipeline.volume_inference import predict_probabilities, probabilities_to_masks

    run_dir = Path(run_dir)
    best = run_dir / "best.pt" if (run_dir / "best.pt").exists() else run_dir / "last.pt"
    model = load_model(best).to(device)
    predictions = [probabilities_to_masks(predict_probabilities(model, c.image, task.sigmoid), task.sigmoid)
                   for c in cases]
    decision = decide_largest_component(predictions, [c.masks for c in cases], task.classes)
    for path in (run_dir / "best.pt", run_dir / "last.pt"):
        if path.exists():
            payload = load_checkpoint(path)
            payload["postprocessing"] = decision
            save_checkpoint(path, payload)
    return decision
