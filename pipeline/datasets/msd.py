"""Medical Segmentation Decathlon tasks: ``TaskXX_Name/dataset.json`` with ``modality``, ``labels``, ``training``
(``{"image", "label"}`` pairs) and ``test`` (image paths), paths relative to the task folder. Multi-modal
images are 4D NIfTI files with the modalities on the last axis.
"""

from __future__ import annotations

import os
from pathlib import Path

from seg25d.pipeline.datasets.layout import Layout, SourceCase, region_spec
from seg25d.pipeline.datasets.nnunet import read_dataset_json
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import stem

__all__ = ["read_msd"]


def read_msd(root: str | os.PathLike) -> Layout:
    """The cases and classes of a Decathlon task folder."""
    root = Path(root)
    meta_path = root / "dataset.json"
    meta = read_dataset_json(meta_path)
    for key in ("modality", "labels", "training"):
        if not meta.get(key):
            raise InputError(meta_path, f"missing or empty {key!r}")
    try:
        channels = tuple(str(meta["modality"][k]) for k in sorted(meta["modality"], key=int))
        labels = {int(v): str(name) for v, name in meta["labels"].items()}
    except (ValueError, TypeError, AttributeError) as err:
        raise InputError(meta_path, f"modality and labels map numbers to names ({err})") from None
    labels.pop(0, None)
    if not labels:
        raise InputError(meta_path, "labels declares no class besides background")
    spec, _ = region_spec([labels[v] for v in sorted(labels)], sorted(labels))
    cases, seen = [], set()
    entries = [(e, True) for e in meta["training"]] + [(e, False) for e in meta.get("test") or []]
    for entry, labelled in entries:
        try:
            image = root / (entry["image"] if labelled else entry)
            label = root / entry["label"] if labelled else None
        except (KeyError, TypeError):
            raise InputError(meta_path, f"training entries are {{\"image\": ..., \"label\": ...}}, test entries "
                                        f"image paths; got {entry!r}") from None
        for path in (image, label):
            if path is not None and not path.is_file():
                raise InputError(path, "listed in dataset.json but not found")
        case_id = stem(image)
        if case_id in seen:
            raise InputError(image, f"case {case_id} is listed twice")
        seen.add(case_id)
        cases.append(SourceCase(case_id, (image,), label))
    return Layout(root, tuple(cases), spec, channels)
