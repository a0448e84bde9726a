"""NIfTI-1/2 volumes (``.nii.gz``, ``.nii``), read and written with nibabel.

Writing keeps the reference file's header: its shape, voxel order, affine and qform/sform codes are the written
file's (the header's scaling and display range are reset), so a label map lies exactly on its image's grid.
``.nii.gz`` is written with gzip level 1 and no timestamp.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.data.imageio import GridIO
from smp_diffusion_encoder.errors import CorruptFileError

if TYPE_CHECKING:
    import nibabel as nib
    import numpy as np
    from numpy.typing import DTypeLike

    from smp_diffusion_encoder.data.volume import Volume


class NiftiIO(GridIO):
    """NIfTI files: read as stored, written with the reference file's header."""

    name: ClassVar[str] = "nifti"
    endings: ClassVar[tuple[str, ...]] = (".nii", ".nii.gz")
    write_endings: ClassVar[tuple[str, ...]] = (".nii.gz", ".nii")

    def read(self, path: Path) -> nib.Nifti1Image:
        import nibabel as nib

        try:
            img = nib.load(path)
        except Exception as err:  # nibabel raises many types (ImageFileError, OSError, EOFError, ValueError)
            raise CorruptFileError(path, f"cannot read as NIfTI ({type(err).__name__}: {err})") from err
        if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
            raise CorruptFileError(path, f"is a {type(img).__name__}, not a NIfTI-1/2 image")
        return img

    def write_array(self, data: np.ndarray, reference: Volume, path: Path, dtype: DTypeLike) -> Path:
        import nibabel as nib

        header = reference.header.copy()
        header.set_data_dtype(dtype)
        header["cal_min"], header["cal_max"] = 0, 0
        klass = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        img = klass(data, None, header=header)  # affine None: the header's qform/sform are kept verbatim
        img.header.set_slope_inter(None, None)
        with atomic_path(path) as tmp:
            if path.name.endswith(".gz"):
                with gzip.GzipFile(tmp, "wb", compresslevel=1, mtime=0) as fh:
                    img.to_stream(fh)
            else:
                with open(tmp, "wb") as fh:
                    img.to_stream(fh)
        return path


__all__ = ["NiftiIO"]
