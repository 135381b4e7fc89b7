"""Plain folders: images and labels found by two glob patterns and paired by file name stem.

Images named ``<case>_0000``, ``<case>_0001``... are the channels of one case (nnU-Net naming); a label is
``<case>`` with any supported extension.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from seg25d.pipeline.datasets.layout import Layout, SourceCase
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import group_channels, stem
from seg25d.pipeline.io import read_volume
from seg25d.pipeline.manifest import LabelSpec

__all__ = ["read_folder"]


def _glob(pattern: str) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True) if Path(p).is_file())


def read_folder(images: str, labels: str | None, spec: LabelSpec | None = None,
                channels: Sequence[str] | None = None) -> Layout:
    """Cases from glob patterns (``images``: every image file; ``labels``: every label file, optional).

    Without ``spec`` the classes are inferred from the labels' nonzero values (an index encoding).
    """
    image_files = _glob(images)
    if not image_files:
        raise InputError(images, "no image files match")
    grouped = group_channels(image_files)
    label_files = _glob(labels) if labels else []
    if labels and not label_files:
        raise InputError(labels, "no label files match")
    by_stem = {}
    for path in label_files:
        if stem(path) in by_stem:
            raise InputError(path, f"two label files for case {stem(path)}")
        by_stem[stem(path)] = path
    cases = []
    for case_id, files in grouped.items():
        if labels and case_id not in by_stem:
            raise InputError(files[0], f"no label named {case_id}.* matches {labels}")
        cases.append(SourceCase(case_id, tuple(files), by_stem.get(case_id)))
    for name, path in by_stem.items():
        if name not in grouped:
            raise InputError(path, f"label without an image (no image named {name}.* or {name}_0000.*)")
    n = len(next(iter(grouped.values())))
    channels = tuple(channels) if channels else tuple(f"image_{k}" if n > 1 else "image" for k in range(n))
    if len(channels) != n:
        raise InputError("--channels", f"names {len(channels)} channel(s); the images have {n}")
    if spec is None:
        values = set()
        for path in label_files:
            values.update(int(v) for v in np.unique(read_volume(path).array) if v != 0)
        spec = LabelSpec.infer(values)
    return Layout(Path(images), tuple(cases), spec, channels)
