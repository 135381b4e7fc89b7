"""NIfTI (.nii, .nii.gz) through nibabel.

Spatial units (``xyzt_units``): metre and micron files are converted to millimetres on read (spacing and
origin alike, as SimpleITK does); unset units (code 0, the common case) mean millimetres by the NIfTI
convention; a code naming no spatial unit is read as millimetres with a warning. A mask written for such a
file gets its header back unchanged, so its affine stays in the file's own units.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

from seg25d.pipeline.errors import InputError
from seg25d.pipeline.io.base import REVERSE, Volume, VolumeIO, VolumeMeta

__all__ = ["NibabelIO", "MM_PER_UNIT"]

log = logging.getLogger(__name__)

MM_PER_UNIT = {0: 1.0, 1: 1000.0, 2: 1.0, 3: 0.001}  # xyzt_units spatial code: unset, metre, mm, micron
_warned: set[str] = set()  # files whose unrecognised units were reported (once per file)


def mm_per_unit(header, path: Path | None = None) -> float:
    """Millimetres per spatial unit of a NIfTI header; a code naming no unit warns (once per ``path``) and
    counts as mm."""
    code = int(header["xyzt_units"]) & 0x07
    if code in MM_PER_UNIT:
        return MM_PER_UNIT[code]
    if path is not None and str(path) not in _warned:
        _warned.add(str(path))
        log.warning("%s: spatial units code %d (xyzt_units) is not metre, mm or micron; read as millimetres",
                    path, code)
    return 1.0


def _scaled(affine: np.ndarray, factor: float) -> np.ndarray:
    """``affine`` with its world coordinates (rotation-zooms and translation) multiplied by ``factor``."""
    out = np.array(affine, dtype=float)
    out[:3] *= factor
    return out


class NibabelIO(VolumeIO):
    """NIfTI-1/2 reader and writer.

    The writer keeps the source header (data type aside), so the qform and sform with their codes, units
    and description survive; for volumes that came from other formats it writes the affine as both qform and
    sform (code 1, scanner).
    """

    extensions = (".nii.gz", ".nii")

    def read(self, path: Path) -> Volume:
        try:
            img = nib.load(str(path))
            data = np.asanyarray(img.dataobj)
        except Exception as err:  # nibabel raises many types for corrupt files
            reason = " ".join(str(err).split())  # some nibabel messages span lines; InputError is one line
            raise InputError(path, f"cannot read NIfTI ({type(err).__name__}: {reason})") from None
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise InputError(path, f"expected a 3D volume, got {data.ndim}D shape {tuple(data.shape)}")
        array = np.ascontiguousarray(data.transpose(2, 1, 0))
        meta = VolumeMeta(
            shape=array.shape,
            affine=_scaled(img.affine, mm_per_unit(img.header, path)) @ REVERSE,
            format="nifti",
            path=str(path),
            extension=".nii.gz" if str(path).lower().endswith(".gz") else ".nii",
            header=img.header.copy(),
        )
        return Volume(array, meta)

    def write(self, path: Path, array: np.ndarray, meta: VolumeMeta) -> None:
        data = np.asarray(array).transpose(2, 1, 0)
        affine_ijk = np.asarray(meta.affine, dtype=float) @ REVERSE
        header = meta.header
        if isinstance(header, nib.Nifti1Header):  # Nifti2Header subclasses it
            scale = mm_per_unit(header)
            affine_ijk = _scaled(affine_ijk, 1.0 / scale)  # back to the header's units
            image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
            header = header.copy()
            header.set_data_dtype(data.dtype)
            img = image_class(data, None, header=header)
            img.header.set_slope_inter(1.0, 0.0)
            sform, scode = header.get_sform(coded=True)
            qform, qcode = header.get_qform(coded=True)
            img.set_sform(sform if sform is not None else header.get_sform(), int(scode))  # uncoded ones too
            img.set_qform(qform if qform is not None else header.get_qform(), int(qcode))
            if not np.allclose(img.affine, affine_ijk, atol=1e-4 / scale):  # meta changed: its affine wins
                img.set_sform(affine_ijk, 1)
                img.set_qform(affine_ijk, 1)
        else:
            img = nib.Nifti1Image(data, affine_ijk)
            img.set_qform(affine_ijk, 1)
            img.set_sform(affine_ijk, 1)
            img.header.set_xyzt_units("mm")
        nib.save(img, str(path))
