"""NRRD and MetaImage (MHA/MHD) volumes, read and written with SimpleITK as nnU-Net's SimpleITKIO does.

Reading gives a NIfTI image in memory, so these files pass through the same checks and the same canonical
reorientation as NIfTI files (:func:`~smp_diffusion_encoder.data.volume.read_volume`). The voxel axes
``(i, j, k)`` are ITK's index order (the file's), and the affine is built from ITK's geometry, which is LPS:

``world_RAS = diag(-1, -1, 1) @ (origin + direction @ diag(spacing) @ (i, j, k))``

Writing (:func:`write_itk_like`, used by ``write_label_map`` / ``write_volume_like`` for ``.nrrd`` and
``.mha`` paths) inverts this exactly: the file gets the reference's voxel order, size, spacing, origin and
direction (equal to float rounding, 1e-9 mm), compressed, atomically (temporary file + rename). Only the
single-file formats are written: ``.mhd``/``.nhdr`` keep the voxels in a second file, which cannot be
replaced atomically together with its header. A 4D array (class probabilities) is written as a vector image,
the class axis as the voxel components.

Example:
    >>> from importlib.resources import files
    >>> from smp_diffusion_encoder.data.volume import read_volume, write_label_map
    >>> case = files("smp_diffusion_encoder") / "demo_data/train/REALCT_Tr_0001"
    >>> vol = read_volume(case / "image.nii.gz")
    >>> write_label_map(read_volume(case / "label.nii.gz", kind="label").array, vol, "case_labels.nrrd")
    PosixPath('case_labels.nrrd')
    >>> read_volume("case_labels.nrrd", kind="label").spacing       # read back through SimpleITK
    (3.0, 3.0, 3.0)
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np

from smp_diffusion_encoder._io import atomic_path
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InvalidVolumeError

#: File endings read through SimpleITK (header + data files ``.mhd``/``.nhdr`` are read, never written).
ITK_SUFFIXES: tuple[str, ...] = (".nrrd", ".nhdr", ".mha", ".mhd")
#: File endings :func:`write_itk_like` writes, with the ITK ImageIO that writes each.
ITK_WRITE_IOS: dict[str, str] = {".nrrd": "NrrdImageIO", ".mha": "MetaImageIO"}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_FORMAT_NAMES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}


def is_itk_file(path: Path) -> bool:
    """True for a file whose name ends in one of :data:`ITK_SUFFIXES` (case-insensitive)."""
    return path.suffix.lower() in ITK_SUFFIXES


def read_itk_image(path: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Read a NRRD / MetaImage file as an in-memory NIfTI image (voxels as stored, affine RAS mm, codes 1).

    Raises:
        CorruptFileError: SimpleITK cannot read the file (truncated, a missing ``.raw`` data file...).
        InvalidVolumeError: several values per voxel (colour or vector image), or not 2D-4D.
    """
    import SimpleITK as sitk

    path = Path(path)
    kind = _FORMAT_NAMES.get(path.suffix.lower(), "an ITK image")
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        raise CorruptFileError(path, f"cannot read as {kind} (SimpleITK: {_itk_message(err)})") from err
    if img.GetNumberOfComponentsPerPixel() != 1:
        raise InvalidVolumeError(
            path,
            f"has {img.GetNumberOfComponentsPerPixel()} values per voxel (a colour or "
            f"vector image); expected one CT value or label id per voxel",
        )
    dim = img.GetDimension()
    data = sitk.GetArrayFromImage(img)  # index order reversed: (k, j, i) for 3D
    data = np.ascontiguousarray(np.transpose(data, tuple(range(data.ndim))[::-1]))  # -> (i, j, k[, t])
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(dim, dim)
    lps = np.eye(4)
    n = min(dim, 3)
    lps[:n, :n] = direction[:n, :n] * np.array(img.GetSpacing()[:n])
    lps[:n, 3] = img.GetOrigin()[:n]
    affine = _LPS_TO_RAS @ lps
    nifti = nib.Nifti1Image(data, affine)
    nifti.set_qform(affine, code=1)
    nifti.set_sform(affine, code=1)
    nifti.header.set_xyzt_units("mm")
    return nifti


def write_itk_like(data: np.ndarray, affine: np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write file-order ``(i, j, k)`` (or ``(i, j, k, C)``: a vector image) ``data`` as ``.nrrd``/``.mha`` on
    the grid of the RAS ``affine``; zlib-compressed, atomically. Returns the path.

    Raises:
        ConfigError: another ending, or a sheared affine (ITK grids are orthogonal).
    """
    import SimpleITK as sitk

    path = Path(path)
    io_name = ITK_WRITE_IOS.get(path.suffix.lower())
    if io_name is None:
        raise ConfigError(f"{path}: SimpleITK output must end in {' or '.join(ITK_WRITE_IOS)}")
    lps = _LPS_TO_RAS @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    direction = lps[:3, :3] / spacing
    if np.abs(direction.T @ direction - np.eye(3)).max() > 1e-6:
        raise ConfigError(
            f"{path}: the reference grid is sheared (non-orthogonal affine), which NRRD/MHA files "
            f"written by ITK cannot hold; write NIfTI (.nii.gz) instead"
        )
    is_vector = data.ndim == 4
    arr = np.ascontiguousarray(np.transpose(data, (2, 1, 0, 3) if is_vector else (2, 1, 0)))
    img = sitk.GetImageFromArray(arr, isVector=is_vector)
    img.SetSpacing([float(v) for v in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in direction.reshape(-1)])
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(io_name)
    writer.UseCompressionOn()
    with atomic_path(path, keep_suffix=True) as tmp:
        writer.SetFileName(str(tmp))
        writer.Execute(img)
    return path


def _itk_message(err: RuntimeError) -> str:
    """The useful part of a SimpleITK exception (after ``ERROR:``), on one line, at most 300 characters."""
    text = str(err)
    text = text.split("ERROR:", 1)[1] if "ERROR:" in text else text
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."
