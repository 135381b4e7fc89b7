"""The UW-Madison GI Tract Image Segmentation (Kaggle) layout: ids, slice files, case-days, import.

Layout::

    ROOT/train.csv                      id,class,segmentation (three rows per slice, RLE row-major)
    ROOT/train/case{N}/case{N}_day{M}/scans/slice_{NNNN}_{W}_{H}_{PW}_{PH}.png

Ids read ``case{N}_day{M}_slice_{NNNN}``; the classes are ``large_bowel``, ``small_bowel`` and
``stomach``. A slice file name holds the slice number, the width and height in pixels (width first;
the PNG has ``H`` rows) and the pixel width and height in mm. The slice thickness, 3 mm, is not in the
name. A test split uses ``ROOT/test/...`` the same way (its CSV may be missing).

:func:`import_kaggle` turns a split into the project's dataset folder: one NIfTI image and one
bitmask-encoded NIfTI label per case-day, a manifest and its label-spec sidecar.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seg25d.pipeline.errors import InputError, error_line
from seg25d.pipeline.kaggle.rle import rle_decode

__all__ = [
    "CLASSES",
    "CLASS_VALUES",
    "SLICE_THICKNESS_MM",
    "SliceId",
    "SliceFile",
    "CaseDay",
    "CaseDayVolume",
    "parse_slice_id",
    "parse_slice_filename",
    "scan_case_days",
    "read_rle_csv",
    "read_train_csv",
    "stack_masks",
    "load_case_day",
    "gi_label_spec",
    "import_kaggle",
]

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("large_bowel", "small_bowel", "stomach")
CLASS_VALUES: tuple[int, ...] = (1, 2, 4)  # bitmask bits in the imported label volumes (organs can overlap)
SLICE_THICKNESS_MM = 3.0

_ID = re.compile(r"case(\d+)_day(\d+)_slice_(\d+)")
_CASE_DAY = re.compile(r"case(\d+)_day(\d+)")
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_SLICE_FILE = re.compile(rf"slice_(\d+)_(\d+)_(\d+)_{_NUMBER}_{_NUMBER}\.png", re.IGNORECASE)


@dataclass(frozen=True, order=True)
class SliceId:
    """A parsed slice id ``case{case}_day{day}_slice_{slice:04d}``."""

    case: int
    day: int
    slice: int

    @property
    def case_day(self) -> str:
        """``case{N}_day{M}``: the case-day (one scan) the slice belongs to."""
        return f"case{self.case}_day{self.day}"

    @property
    def group(self) -> str:
        """``case{N}``: the patient, for grouped cross-validation."""
        return f"case{self.case}"

    def __str__(self) -> str:
        return f"{self.case_day}_slice_{self.slice:04d}"


@dataclass(frozen=True)
class SliceFile:
    """A parsed slice file ``slice_{NNNN}_{W}_{H}_{PW}_{PH}.png``."""

    path: Path
    slice: int
    width: int
    height: int
    pixel_width: float
    pixel_height: float

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W): the PNG's rows and columns as the name promises."""
        return (self.height, self.width)


def parse_slice_id(text: str, where: str | None = None) -> SliceId:
    """Parse ``case{N}_day{M}_slice_{NNNN}``.

    Raises:
        InputError: the id does not have that form (named by ``where``, default the id itself).
    """
    match = _ID.fullmatch(str(text).strip())
    if match is None:
        raise InputError(where or repr(text), f"id {text!r} is not of the form case{{N}}_day{{M}}_slice_{{NNNN}}")
    return SliceId(*(int(g) for g in match.groups()))


def parse_slice_filename(path: str | os.PathLike) -> SliceFile:
    """Parse a slice file name ``slice_{NNNN}_{W}_{H}_{PW}_{PH}.png`` (width first).

    Raises:
        InputError: the name does not have that form, or a size or pixel spacing is zero.
    """
    path = Path(path)
    match = _SLICE_FILE.fullmatch(path.name)
    if match is None:
        raise InputError(path, "slice file name is not of the form slice_{NNNN}_{W}_{H}_{PW}_{PH}.png")
    number, width, height = (int(g) for g in match.groups()[:3])
    pixel_width, pixel_height = (float(g) for g in match.groups()[3:])
    if width < 1 or height < 1 or pixel_width <= 0 or pixel_height <= 0:
        raise InputError(path, "slice size and pixel spacing in the file name must be positive")
    return SliceFile(path, number, width, height, pixel_width, pixel_height)


@dataclass(frozen=True)
class CaseDay:
    """One scan: the slice files of ``case{case}_day{day}``, sorted by slice number."""

    case: int
    day: int
    folder: Path
    slices: tuple[SliceFile, ...]

    @property
    def name(self) -> str:
        return f"case{self.case}_day{self.day}"

    @property
    def group(self) -> str:
        return f"case{self.case}"

    @property
    def slice_numbers(self) -> tuple[int, ...]:
        return tuple(s.slice for s in self.slices)

    def slice_id(self, number: int) -> SliceId:
        return SliceId(self.case, self.day, number)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(D, H, W) of the stacked scan (call :meth:`check` first for a uniform slice size)."""
        return (len(self.slices), self.slices[0].height, self.slices[0].width)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """(slice thickness, pixel height, pixel width) in mm."""
        first = self.slices[0]
        return (SLICE_THICKNESS_MM, first.pixel_height, first.pixel_width)

    def check(self) -> None:
        """Check the scan can be stacked: no duplicated slice numbers, no gaps, one size and pixel spacing.

        Raises:
            InputError: naming the scans folder or the offending file.
        """
        if not self.slices:
            raise InputError(self.folder, "no slice_*.png files")
        numbers = np.array(self.slice_numbers)
        repeated = np.flatnonzero(numbers[1:] == numbers[:-1])
        if repeated.size:
            a, b = self.slices[repeated[0]], self.slices[repeated[0] + 1]
            raise InputError(b.path, f"duplicated slice {b.slice} of {self.name} (also {a.path.name})")
        expected = set(range(int(numbers[0]), int(numbers[-1]) + 1))
        missing = sorted(expected - set(numbers.tolist()))
        if missing:
            shown = ", ".join(str(self.slice_id(n)) for n in missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise InputError(self.folder, f"{len(missing)} missing slice(s) between slice {numbers[0]} and "
                                          f"{numbers[-1]}: {shown}")
        first = self.slices[0]
        for other in self.slices[1:]:
            if other.shape != first.shape:
                raise InputError(other.path, f"slice size {other.width}x{other.height} differs from "
                                             f"{first.width}x{first.height} of {first.path.name} in {self.name}")
            if (other.pixel_width, other.pixel_height) != (first.pixel_width, first.pixel_height):
                raise InputError(other.path, f"pixel spacing {other.pixel_width}x{other.pixel_height} differs from "
                                             f"{first.pixel_width}x{first.pixel_height} of {first.path.name}")


@dataclass
class CaseDayVolume:
    """A loaded case-day.

    Attributes:
        name: ``case{N}_day{M}``.
        group: ``case{N}``.
        image: (D, H, W) float32, slices in slice-number order.
        spacing: (3.0, pixel height, pixel width) in mm.
        mask: (3, D, H, W) bool in :data:`CLASSES` order, or None without labels.
        slice_numbers: the slice number of each depth index.
        source_dtype: the PNGs' pixel type (the image can be cast back to it without loss).
    """

    name: str
    group: str
    image: np.ndarray
    spacing: tuple[float, float, float]
    mask: np.ndarray | None
    slice_numbers: tuple[int, ...]
    source_dtype: np.dtype


def scan_case_days(root: str | os.PathLike, split: str = "train") -> list[CaseDay]:
    """Find ``ROOT/<split>/case*/case*_day*/scans/*.png`` and group the slices into case-days.

    Only file names are parsed here (no pixels read, no consistency checks; see :meth:`CaseDay.check`).

    Returns:
        Case-days sorted by (case, day), each with its slices sorted by slice number.

    Raises:
        InputError: the split folder is missing, a folder name is not ``case{N}``/``case{N}_day{M}``, a PNG
            name in ``scans`` does not parse.
    """
    base = Path(root) / split
    if not base.is_dir():
        raise InputError(base, f"no '{split}' folder under {root} (expected {split}/case{{N}}/case{{N}}_day{{M}}/scans)")
    found = []
    for case_dir in sorted(p for p in base.glob("case*") if p.is_dir()):
        if not re.fullmatch(r"case\d+", case_dir.name):
            raise InputError(case_dir, "case folder name is not case{N}")
        for day_dir in sorted(p for p in case_dir.glob("case*_day*") if p.is_dir()):
            match = _CASE_DAY.fullmatch(day_dir.name)
            if match is None or f"case{match.group(1)}" != case_dir.name:
                raise InputError(day_dir, f"case-day folder name is not {case_dir.name}_day{{M}}")
            scans = day_dir / "scans"
            if not scans.is_dir():
                raise InputError(day_dir, "no 'scans' folder")
            slices = sorted((parse_slice_filename(p) for p in scans.iterdir()
                             if p.suffix.lower() == ".png" and p.is_file()),
                            key=lambda s: (s.slice, s.path.name))
            found.append(CaseDay(int(match.group(1)), int(match.group(2)), scans, tuple(slices)))
    found.sort(key=lambda c: (c.case, c.day))
    return found


def read_rle_csv(path: str | os.PathLike, column: str) -> pd.DataFrame:
    """Read an ``id,class,<column>`` RLE table (train.csv: ``segmentation``, a submission: ``predicted``).

    Returns:
        DataFrame with columns ``id``, ``class``, ``<column>`` (str, ``""`` for an empty mask) and the
        parsed ``case_day`` (str) and ``slice`` (int); the original row order.

    Raises:
        InputError: the file is missing or unreadable, a column is missing, an id does not parse, a class is
            unknown, or an (id, class) pair appears twice.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"cannot read as CSV: {str(err).splitlines()[0] if str(err) else err}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in ("id", "class", column) if c not in frame.columns]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}; expected header id,class,{column} "
                               f"(found {','.join(frame.columns)})")
    frame = frame[["id", "class", column]].copy()
    for name in ("id", "class", column):
        frame[name] = frame[name].astype(object).map(lambda v: "" if v is None else str(v).strip())
    ids = [parse_slice_id(text, where=f"{path}, row {row + 2}") for row, text in enumerate(frame["id"])]
    unknown = ~frame["class"].isin(CLASSES)
    if unknown.any():
        row = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(path, f"row {row + 2} ({frame['id'].iat[row]}): unknown class {frame['class'].iat[row]!r}; "
                               f"expected one of {', '.join(CLASSES)}")
    frame["case_day"] = [i.case_day for i in ids]
    frame["slice"] = np.array([i.slice for i in ids], dtype=np.int64)
    # Normalise the id spelling (zero padding) so the same slice always has the same key.
    frame["id"] = [str(i) for i in ids]
    duplicated = frame.duplicated(["id", "class"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated.to_numpy())[0])
        raise InputError(path, f"row {row + 2}: duplicate row for {frame['id'].iat[row]} {frame['class'].iat[row]}")
    return frame.reset_index(drop=True)


def read_train_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read ``train.csv`` (``id,class,segmentation``); see :func:`read_rle_csv`."""
    return read_rle_csv(path, "segmentation")


def stack_masks(case_day: CaseDay, rows: pd.DataFrame, column: str = "segmentation",
                require_all_slices: bool = True) -> np.ndarray:
    """Decode the RLE rows of one case-day into a (3, D, H, W) boolean stack in :data:`CLASSES` order.

    Args:
        case_day: the scan (checked with :meth:`CaseDay.check`).
        rows: rows from :func:`read_rle_csv` (rows of other case-days are ignored).
        column: the RLE column.
        require_all_slices: demand exactly one row per image slice and class (train.csv); otherwise
            slices without rows stay empty.

    Raises:
        InputError: naming the id: a row without an image slice, a slice or class without a row, bad RLE.
    """
    case_day.check()
    depth, height, width = case_day.shape
    index = {n: k for k, n in enumerate(case_day.slice_numbers)}
    masks = np.zeros((len(CLASSES), depth, height, width), dtype=bool)
    rows = rows[rows["case_day"] == case_day.name]
    seen = np.zeros((len(CLASSES), depth), dtype=bool)
    for sid, cls, rle, number in zip(rows["id"], rows["class"], rows[column], rows["slice"]):
        k = index.get(int(number))
        if k is None:
            raise InputError(sid, f"no image for this id (no slice_{int(number):04d}_*.png in {case_day.folder})")
        c = CLASSES.index(cls)
        masks[c, k] = rle_decode(rle, (height, width), where=f"{sid} {cls}")
        seen[c, k] = True
    if require_all_slices and not seen.all():
        c, k = (int(v[0]) for v in np.nonzero(~seen))
        sid = case_day.slice_id(case_day.slice_numbers[k])
        raise InputError(sid, f"no '{CLASSES[c]}' row for this slice (every image slice needs one row per class)")
    return masks


def load_case_day(case_day: CaseDay, labels: pd.DataFrame | None = None) -> CaseDayVolume:
    """Read a case-day's PNGs with SimpleITK into a volume and decode its masks.

    Args:
        case_day: from :func:`scan_case_days`.
        labels: the train.csv table (:func:`read_train_csv`, all case-days or just this one), or None.

    Returns:
        The :class:`CaseDayVolume` (image float32 (D, H, W), spacing (3.0, PH, PW), mask (3, D, H, W)).

    Raises:
        InputError: naming the file or id: gaps, duplicated slices, mixed sizes, a PNG whose shape disagrees
            with its name or that is not single-channel, unreadable PNGs, and the label problems of
            :func:`stack_masks`.
    """
    import SimpleITK as sitk

    case_day.check()
    depth, height, width = case_day.shape
    image = np.empty((depth, height, width), dtype=np.float32)
    source_dtype = None
    for k, sf in enumerate(case_day.slices):
        try:
            itk = sitk.ReadImage(str(sf.path))
        except RuntimeError as err:
            raise InputError(sf.path, f"cannot read PNG: {error_line(err)}") from None
        if itk.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(sf.path, f"expected a single-channel (grey) PNG, found "
                                      f"{itk.GetNumberOfComponentsPerPixel()} channels")
        pixels = sitk.GetArrayFromImage(itk)
        if pixels.shape != sf.shape:
            raise InputError(sf.path, f"PNG is {pixels.shape[-1]} wide and {pixels.shape[0]} high "
                                      f"(shape {pixels.shape}) but its name says {sf.width}x{sf.height}")
        if source_dtype is None:
            source_dtype = pixels.dtype
        elif pixels.dtype != source_dtype:
            source_dtype = np.promote_types(source_dtype, pixels.dtype)
        image[k] = pixels
    mask = None if labels is None else stack_masks(case_day, labels, "segmentation", require_all_slices=True)
    return CaseDayVolume(case_day.name, case_day.group, image, case_day.spacing, mask, case_day.slice_numbers,
                         np.dtype(source_dtype))


def gi_label_spec():
    """The label spec of imported GI volumes: bitmask 1 large bowel, 2 small bowel, 4 stomach."""
    from seg25d.pipeline.manifest import LabelSpec

    return LabelSpec(CLASSES, CLASS_VALUES, "bitmask")


def import_kaggle(root: str | os.PathLike, out_dir: str | os.PathLike, split: str = "train") -> Path:
    """Convert a split of the Kaggle layout into NIfTI volumes, a manifest and its label-spec sidecar.

    Writes ``images/{case_day}.nii.gz`` (the PNGs' integer type, lossless), ``labels/{case_day}.nii.gz``
    (bitmask: 1 large bowel, 2 small bowel, 4 stomach; uint8), ``manifest.csv`` (group = ``case{N}``, split
    ``test`` for the test split and ``train`` otherwise) and ``manifest.json``. Without ``ROOT/<split>.csv``
    (or with one that has no ``segmentation`` column, like the competition's test.csv) only images are
    imported and the label column is empty.

    Args:
        root: the dataset root (holding ``train.csv`` and ``train/``).
        out_dir: where to write; created if needed.
        split: the folder under ``root`` to import.

    Returns:
        The manifest path.

    Raises:
        InputError: no case-days, ids in the CSV without an image, and the problems of :func:`load_case_day`.
    """
    from tqdm import tqdm

    from seg25d.pipeline.io import synthetic_meta, write_mask, write_volume
    from seg25d.pipeline.manifest import write_label_spec, write_manifest
    from seg25d.pipeline.outputs import check_out_dir, inside

    root, out_dir = Path(root), check_out_dir(out_dir)
    case_days = scan_case_days(root, split)
    if not case_days:
        raise InputError(root / split, "no case-day folders (case{N}/case{N}_day{M}/scans/*.png)")
    labels = _read_labels(root / f"{split}.csv", split)
    groups: dict[str, pd.DataFrame] = {}
    if labels is not None:
        groups = {name: rows for name, rows in labels.groupby("case_day", sort=False)}
        known = {c.name for c in case_days}
        orphan = labels[~labels["case_day"].isin(known)]
        if len(orphan):
            sid = orphan["id"].iat[0]
            raise InputError(sid, f"id in {root / f'{split}.csv'} has no image "
                                  f"(no folder {root / split / orphan['case_day'].iat[0].split('_')[0]}/"
                                  f"{orphan['case_day'].iat[0]}/scans)")
    spec = gi_label_spec()
    manifest_split = "test" if split == "test" else "train"
    manifest_rows = []
    empty = labels.iloc[:0] if labels is not None else None
    for case_day in tqdm(case_days, desc=f"import {split}", unit="case-day"):
        volume = load_case_day(case_day, None if labels is None else groups.get(case_day.name, empty))
        meta = synthetic_meta(shape=volume.image.shape, spacing=volume.spacing)
        image_path = inside(out_dir / "images", f"{volume.name}.nii.gz")
        write_volume(image_path, volume.image.astype(volume.source_dtype), meta)
        label_path = None
        if volume.mask is not None:
            label_path = inside(out_dir / "labels", f"{volume.name}.nii.gz")
            write_mask(label_path, spec.encode(volume.mask), meta)
        manifest_rows.append({"case_id": volume.name, "image": str(image_path),
                              "label": None if label_path is None else str(label_path),
                              "split": manifest_split, "group": volume.group})
    manifest = out_dir / "manifest.csv"
    write_label_spec(manifest, spec)  # the sidecar first: a present manifest means a complete import
    write_manifest(manifest, manifest_rows)
    log.info("imported %d case-days from %s into %s", len(manifest_rows), root / split, out_dir)
    return manifest


def _read_labels(csv_path: Path, split: str) -> pd.DataFrame | None:
    if not csv_path.is_file():
        log.info("%s not found: importing images only", csv_path)
        return None
    if split != "train":
        header = pd.read_csv(csv_path, nrows=0).columns
        if "segmentation" not in [str(c).strip() for c in header]:
            log.info("%s has no segmentation column: importing images only", csv_path)
            return None
    return read_train_csv(csv_path)
