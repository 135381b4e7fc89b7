"""Tiny two-modality datasets in the nnU-Net, Decathlon and plain-folder layouts (16^3 voxels, 1 x 1 x 2 mm)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

SHAPE = (16, 16, 16)  # NIfTI (i, j, k)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def case_arrays(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CT-like and MR-like channels of a ball with a core; label 1 = shell, 2 = core."""
    rng = np.random.default_rng(seed)
    centre = rng.uniform(6, 10, size=3)
    radius = rng.uniform(3.5, 5.0)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij"), -1)
    dist = np.linalg.norm(grid - centre, axis=-1)
    label = np.where(dist < radius, 1, 0) + (dist < radius / 2)
    ct = np.where(label > 0, 300.0, -100.0) + np.where(label == 2, 200.0, 0.0) + rng.normal(0, 20, SHAPE)
    mr = rng.uniform(50, 500) * (1.0 + (label > 0) + rng.normal(0, 0.1, SHAPE))
    return ct.astype(np.float32), mr.astype(np.float32), label.astype(np.uint8)


def save(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def nnunet_dataset(root: Path, n: int = 6, tests: int = 2, regions: bool = True) -> Path:
    """``Dataset001_Ball``: channels CT and T2; classes whole = [1, 2] and core = 2 (regions) or shell/core."""
    folder = root / "Dataset001_Ball"
    for i in range(n + tests):
        ct, mr, label = case_arrays(i)
        split = "Tr" if i < n else "Ts"
        save(folder / f"images{split}" / f"ball_{i:03d}_0000.nii.gz", ct)
        save(folder / f"images{split}" / f"ball_{i:03d}_0001.nii.gz", mr)
        if i < n:
            save(folder / "labelsTr" / f"ball_{i:03d}.nii.gz", label)
    labels = {"background": 0, "whole": [1, 2], "core": 2} if regions else {"background": 0, "shell": 1, "core": 2}
    (folder / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT", "1": "T2"}, "labels": labels, "numTraining": n, "file_ending": ".nii.gz"}))
    return folder


def msd_dataset(root: Path, n: int = 6, tests: int = 1) -> Path:
    """``Task01_Ball``: 4D images (CT, T2 on the last axis), labels shell = 1, core = 2."""
    folder = root / "Task01_Ball"
    training, test = [], []
    for i in range(n + tests):
        ct, mr, label = case_arrays(i)
        split = "Tr" if i < n else "Ts"
        save(folder / f"images{split}" / f"ball_{i}.nii.gz", np.stack([ct, mr], -1))
        if i < n:
            save(folder / "labelsTr" / f"ball_{i}.nii.gz", label)
            training.append({"image": f"./imagesTr/ball_{i}.nii.gz", "label": f"./labelsTr/ball_{i}.nii.gz"})
        else:
            test.append(f"./imagesTs/ball_{i}.nii.gz")
    (folder / "dataset.json").write_text(json.dumps({
        "name": "Ball", "modality": {"0": "CT", "1": "T2"}, "labels": {"0": "background", "1": "shell", "2": "core"},
        "numTraining": n, "numTest": tests, "training": training, "test": test}))
    return folder


def folder_dataset(root: Path, n: int = 6) -> Path:
    """``images/pat<p>_scan<s>.nii.gz`` (CT channel only) and ``labels/`` with the same names; two scans per patient."""
    for i in range(n):
        ct, _, label = case_arrays(i)
        name = f"pat{i // 2}_scan{i % 2}.nii.gz"
        save(root / "images" / name, ct)
        save(root / "labels" / name, label)
    return root


class Builders:
    """The builders above as one fixture (test modules cannot import each other under importlib mode)."""

    case_arrays = staticmethod(case_arrays)
    save = staticmethod(save)
    nnunet = staticmethod(nnunet_dataset)
    msd = staticmethod(msd_dataset)
    folder = staticmethod(folder_dataset)


@pytest.fixture(scope="session")
def build() -> Builders:
    return Builders()
