"""Synthetic data the project ships as its default datasets.

* :func:`write_vessel_dataset` / :func:`vessel_volume`: MR-angiography-like volumes with branching vessels
  (a project dataset folder: images, labels, manifest and label spec).
* :func:`write_gi_dataset`: abdominal MR case-days in the UW-Madison GI Tract (Kaggle) layout.

Everything is deterministic by seed; case ``i`` does not depend on how many cases are generated.
"""

from __future__ import annotations

from seg25d.pipeline.synth.gi import GI_CLASSES, GI_SIZES, write_gi_dataset
from seg25d.pipeline.synth.vessels import vessel_volume, write_vessel_dataset

__all__ = ["vessel_volume", "write_vessel_dataset", "write_gi_dataset", "GI_CLASSES", "GI_SIZES"]
