"""What ``seg25d predict --input`` predicts: files, folders of files, DICOM series, nnU-Net channel files.

- a volume file (NIfTI, NRRD, MHA/MHD) is a case named by its stem; its mask keeps its name;
- a folder holding volume files or subfolders is a dataset folder: each volume file is a case and each
  subfolder a DICOM series (mask ``<folder>.nii.gz``);
- any other folder is one DICOM series;
- files named ``<case>_0000``, ``<case>_0001``... are the channels of ``<case>`` when the model takes several
  channels, or when every file has the ``_0000`` suffix (nnU-Net's single-channel naming); the mask is
  ``<case>`` + the extension, without the suffix.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from seg25d.pipeline.atomic import full_suffix
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import group_channels, stem
from seg25d.pipeline.io import SUPPORTED_EXTENSIONS

__all__ = ["jobs_from_paths", "expand_inputs"]


def _is_volume_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and full_suffix(path).lower() in SUPPORTED_EXTENSIONS \
        and full_suffix(path).lower() not in (".raw", ".zraw")


def _is_dataset_folder(folder: Path) -> bool:
    entries = [e for e in folder.iterdir() if not e.name.startswith(".")]
    return any(_is_volume_file(e) for e in entries) or (bool(entries) and all(e.is_dir() for e in entries))


def expand_inputs(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """``(volume files, DICOM series folders)`` named by ``paths`` (see the module docstring)."""
    files, series = [], []
    for path in map(Path, paths):
        if path.is_dir() and _is_dataset_folder(path):
            entries = sorted(e for e in path.iterdir() if not e.name.startswith("."))
            files += [e for e in entries if _is_volume_file(e)]
            series += [e for e in entries if e.is_dir()]
        elif path.is_dir():
            series.append(path)
        else:
            files.append(path)  # a missing file fails as its own case
    return files, series


def jobs_from_paths(paths: Sequence[str | os.PathLike], channels: int = 1):
    """Prediction jobs for ``--input`` paths and a model taking ``channels`` image channels."""
    from seg25d.pipeline.predict import PredictionJob

    files, series = expand_inputs(paths)
    grouped = files and (channels > 1 or _all_first_channel(files))
    cases = list(group_channels(files, channels).items()) if grouped else [(stem(p), [p]) for p in files]
    jobs, names = [], {}
    for case_id, parts in cases:
        name = f"{case_id}{full_suffix(parts[0])}"
        jobs.append(PredictionJob(case_id, str(parts[0]), name, tuple(str(p) for p in parts)))
    for folder in series:
        jobs.append(PredictionJob(folder.name, str(folder), f"{folder.name}.nii.gz"))
    for job in jobs:
        if job.name in names:
            raise InputError(job.image, f"two inputs would both write {job.name} (the other: {names[job.name]})")
        names[job.name] = job.image
    return jobs


def _all_first_channel(files: Sequence[Path]) -> bool:
    return all(stem(p).endswith("_0000") and len(stem(p)) > 5 for p in files)
