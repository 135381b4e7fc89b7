"""Label value -> class name tables written next to predictions, for people and for viewers.

- ``labels.json``: the label encoding (:class:`~seg25d.pipeline.manifest.LabelSpec`) plus ``labels``, every value a
  mask can hold mapped to its name (bitmask values that combine classes are named ``a+b``).
- ``labels.ctbl``: a 3D Slicer colour table (``value name R G B A`` per line; load it with the mask in Slicer's
  Data module, or name it in a segmentation's import dialog).
- ``labels_itksnap.txt``: an ITK-SNAP label description file (Segmentation > Import Label Descriptions).
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from seg25d.pipeline.atomic import write_json, write_text
from seg25d.pipeline.manifest import LabelSpec

__all__ = ["label_names", "write_label_tables", "TABLE_FILES"]

TABLE_FILES = ("labels.json", "labels.ctbl", "labels_itksnap.txt")
# distinct colours (Slicer's generic anatomy palette order), reused cyclically
PALETTE = [(128, 174, 128), (241, 214, 145), (177, 122, 101), (111, 184, 210), (216, 101, 79), (221, 130, 101),
           (144, 238, 144), (192, 104, 88), (220, 245, 20), (78, 63, 0), (255, 250, 220), (230, 220, 70),
           (200, 200, 235), (250, 250, 210), (244, 214, 49), (0, 151, 206), (183, 156, 220), (183, 214, 211)]
MAX_COMBINED_CLASSES = 8  # bitmask tables list every combination up to this many classes (255 values)


def label_names(spec: LabelSpec) -> dict[int, str]:
    """Every nonzero value a mask of ``spec`` can hold -> its name."""
    if not spec.multilabel or len(spec.classes) > MAX_COMBINED_CLASSES:
        return dict(zip(spec.values, spec.classes))
    names = {}
    for r in range(1, len(spec.classes) + 1):
        for combo in itertools.combinations(zip(spec.values, spec.classes), r):
            names[sum(v for v, _ in combo)] = "+".join(c for _, c in combo)
    return dict(sorted(names.items()))


def _colour(value: int, spec: LabelSpec) -> tuple[int, int, int]:
    if value in spec.values:
        return PALETTE[spec.values.index(value) % len(PALETTE)]
    parts = [PALETTE[i % len(PALETTE)] for i, v in enumerate(spec.values) if value & v]  # blend of the classes
    return tuple(sum(p[k] for p in parts) // len(parts) for k in range(3))


def write_label_tables(out_dir: str | os.PathLike, spec: LabelSpec) -> list[Path]:
    """Write the three tables (see the module docstring) into ``out_dir``, atomically."""
    out_dir = Path(out_dir)
    names = label_names(spec)
    write_json(out_dir / "labels.json", {**spec.to_dict(), "labels": {"0": "background",
                                                                      **{str(v): n for v, n in names.items()}}})
    slicer = ["# seg25d label values (3D Slicer colour table: value name R G B A)", "0 background 0 0 0 0"]
    itksnap = ["# ITK-SNAP Label Description File (seg25d)",
               "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
               '    0     0    0    0     0  0  0    "Clear Label"']
    for value, name in names.items():
        r, g, b = _colour(value, spec)
        slicer.append(f"{value} {name.replace(' ', '_')} {r} {g} {b} 255")
        itksnap.append(f'{value:5d} {r:5d}{g:5d}{b:5d}        1  1  1    "{name}"')
    write_text(out_dir / "labels.ctbl", "\n".join(slicer) + "\n")
    write_text(out_dir / "labels_itksnap.txt", "\n".join(itksnap) + "\n")
    return [out_dir / name for name in TABLE_FILES]
