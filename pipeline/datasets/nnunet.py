"""nnU-Net v2 raw datasets: ``DatasetXXX_Name/`` with ``dataset.json``, ``imagesTr/``, ``labelsTr/``, ``imagesTs/``.

Images are ``<case>_<XXXX><file_ending>``, one file per channel (``_0000``, ``_0001``... as listed in
``channel_names``); labels ``<case><file_ending>``. ``labels`` maps names to values; a name mapped to a list of
values is a region (nnU-Net's region-based training: overlapping classes such as BraTS's whole tumour
``[1, 2, 3]``, tumour core ``[2, 3]``), imported as a bitmask encoding.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from seg25d.pipeline.datasets.layout import Layout, SourceCase, region_spec
from seg25d.pipeline.errors import InputError
from seg25d.pipeline.images import CHANNEL_SUFFIX

__all__ = ["read_nnunet", "read_dataset_json"]


def read_dataset_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(path, "dataset.json not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot parse JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _files(folder: Path, ending: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(ending)
                  and not p.name.startswith(".")) if folder.is_dir() else []


def read_nnunet(root: str | os.PathLike) -> Layout:
    """The cases and classes of an nnU-Net v2 raw dataset folder."""
    root = Path(root)
    meta_path = root / "dataset.json"
    meta = read_dataset_json(meta_path)
    for key in ("channel_names", "labels"):
        if not isinstance(meta.get(key), dict) or not meta[key]:
            raise InputError(meta_path, f"missing or empty {key!r}")
    ending = str(meta.get("file_ending", ".nii.gz"))
    try:
        order = sorted(meta["channel_names"], key=int)
    except ValueError:
        raise InputError(meta_path, "channel_names keys must be channel numbers (\"0\", \"1\", ...)") from None
    if [int(k) for k in order] != list(range(len(order))):
        raise InputError(meta_path, f"channel_names must number the channels 0..{len(order) - 1}")
    channels = tuple(str(meta["channel_names"][k]) for k in order)
    labels = {str(name): value for name, value in meta["labels"].items()}
    if "ignore" in labels:
        raise InputError(meta_path, "the 'ignore' label is not supported; remove it or relabel those voxels")
    if labels.pop("background", 0) != 0:
        raise InputError(meta_path, "labels: background must be 0")
    if not labels:
        raise InputError(meta_path, "labels declares no class besides background")
    try:
        spec, regions = region_spec(labels.keys(), labels.values())
    except (ValueError, TypeError) as err:
        raise InputError(meta_path, f"invalid labels ({err})") from None
    cases = []
    for split, label_dir in (("imagesTr", root / "labelsTr"), ("imagesTs", None)):
        images = _files(root / split, ending)
        if split == "imagesTr" and not images:
            raise InputError(root / split, f"no images ending in {ending}")
        for path in images:
            if not CHANNEL_SUFFIX.match(path.name[: -len(ending)]):
                raise InputError(path, f"image name lacks the channel suffix _0000 ({split}/<case>_0000{ending})")
        grouped = _by_case(images, ending, len(channels))
        for case_id, files in grouped.items():
            label = None
            if label_dir is not None:
                label = label_dir / f"{case_id}{ending}"
                if not label.is_file():
                    raise InputError(label, f"label of case {case_id} not found")
            cases.append(SourceCase(case_id, tuple(files), label))
        if label_dir is not None:
            for path in _files(label_dir, ending):
                if path.name[: -len(ending)] not in grouped:
                    raise InputError(path, f"label without an image ({split}/{path.name[: -len(ending)]}_0000{ending})")
    return Layout(root, tuple(cases), spec, channels, regions)


def _by_case(images: list[Path], ending: str, channels: int) -> dict[str, list[Path]]:
    """``{case: [channel files]}``; a case missing a channel, or with one beyond ``channel_names``, is an error."""
    found: dict[str, dict[int, Path]] = {}
    for path in images:
        m = CHANNEL_SUFFIX.match(path.name[: -len(ending)])
        found.setdefault(m["case"], {})[int(m["channel"])] = path
    for case, files in found.items():
        for k in range(channels):
            if k not in files:
                any_file = next(iter(files.values()))
                raise InputError(any_file.with_name(f"{case}_{k:04d}{ending}"),
                                 f"channel {k} of case {case} is missing ({channels} channels in dataset.json)")
        for k, path in files.items():
            if k >= channels:
                raise InputError(path, f"channel {k} is not in dataset.json's channel_names (0..{channels - 1})")
    return {case: [files[k] for k in range(channels)] for case, files in sorted(found.items())}
