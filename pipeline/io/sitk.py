"""NRRD, MetaImage (.mha/.mhd), DICOM folders and other formats through SimpleITK."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from seg25d.pipeline.errors import InputError, error_line
from seg25d.pipeline.io.base import Volume, VolumeIO, VolumeMeta, itk_geometry_from_ras, ras_affine_from_itk

__all__ = ["SimpleITKIO"]


class SimpleITKIO(VolumeIO):
    """SimpleITK reader and writer; geometry from origin, spacing and direction (LPS), converted to RAS.

    A DICOM scan (a folder) is read as one volume; masks for it are written as NIfTI, because a label
    volume has no plain DICOM form (DICOM-SEG is out of scope).
    """

    extensions = (".nrrd", ".nhdr", ".mha", ".mhd", ".nii.gz", ".nii", ".vtk", ".hdr", ".img", ".gipl", ".tif", ".tiff")

    def read(self, path: Path) -> Volume:
        path = Path(path)
        try:
            if path.is_dir():
                reader = sitk.ImageSeriesReader()
                scans = reader.GetGDCMSeriesIDs(str(path))  # one ID per DICOM scan in the folder
                if not scans:
                    raise InputError(path, "folder holds no DICOM scan")
                if len(scans) > 1:
                    raise InputError(path, f"folder holds {len(scans)} DICOM scans; give one scan per folder")
                reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(path), scans[0]))
                img = reader.Execute()
            else:
                img = sitk.ReadImage(str(path))
        except InputError:
            raise
        except Exception as err:
            raise InputError(path, f"cannot read image ({error_line(err)})") from None
        if img.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(path, f"expected a scalar volume, got {img.GetNumberOfComponentsPerPixel()} components per voxel")
        if img.GetDimension() == 4 and img.GetSize()[3] == 1:
            img = img[:, :, :, 0]
        if img.GetDimension() != 3:
            raise InputError(path, f"expected a 3D volume, got {img.GetDimension()}D size {img.GetSize()}")
        array = sitk.GetArrayFromImage(img)
        meta = VolumeMeta(
            shape=array.shape,
            affine=ras_affine_from_itk(img.GetOrigin(), img.GetSpacing(), img.GetDirection()),
            format="sitk",
            path=str(path),
            extension=".nii.gz" if path.is_dir() else _extension(path),
        )
        return Volume(array, meta)

    def write(self, path: Path, array: np.ndarray, meta: VolumeMeta) -> None:
        origin, spacing, direction = itk_geometry_from_ras(meta.affine, path)
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img.SetOrigin(origin)
        img.SetSpacing(spacing)
        img.SetDirection(direction)
        sitk.WriteImage(img, str(path), useCompression=True)


def _extension(path: Path) -> str:
    from seg25d.pipeline.atomic import full_suffix

    return full_suffix(path).lower()
