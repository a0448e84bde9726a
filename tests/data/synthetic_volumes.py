"""Tiny synthetic CT volumes written as NIfTI or as DICOM series, for the data and CLI tests.

A plain module (not conftest.py) so test files can import the helpers unambiguously:
``from tests.data.synthetic_volumes import write_nifti`` (``tests`` is a package mirroring the library).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

#: A flipped and permuted (not oblique) affine: voxel axes (i, j, k) point to (P, L, I), 0.7/0.8/2.5 mm.
PERMUTED_AFFINE = np.array(
    [
        [0.0, -0.8, 0.0, 40.0],
        [-0.7, 0.0, 0.0, 25.0],
        [0.0, 0.0, -2.5, 100.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def synthetic_ct(shape: tuple[int, int, int] = (24, 20, 8), seed: int = 0) -> np.ndarray:
    """int16 HU in file voxel order: air (-1000) around a soft-tissue body (~40 HU) with a bone (700 HU)."""
    rng = np.random.default_rng(seed)
    ii, jj = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (ii**2 / 0.7 + jj**2 / 0.5) < 1
    ct = np.full(shape, -1000, dtype=np.int16)
    ct[body] = 40
    ct[(ii - 0.2) ** 2 + jj**2 < 0.02] = 700
    return (ct + rng.integers(-20, 20, shape)).astype(np.int16)


def synthetic_labels(shape: tuple[int, int, int] = (24, 20, 8)) -> np.ndarray:
    """uint8 FLARE ids 0..13 placed as blocks, asymmetric so flips are detectable."""
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:8, 3:9, 1:5] = 1
    labels[12:15, 5:7, 2:6] = 2
    labels[16:20, 12:18, 0:3] = 13
    return labels


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray | None = None,
    *,
    qform_code: int = 1,
    sform_code: int = 1,
    slope_inter: tuple[float, float] | None = None,
) -> Path:
    """Write ``data`` (file voxel order) as NIfTI-1 with the given affine and codes; returns ``path``."""
    affine = np.diag([0.7, 0.8, 2.5, 1.0]) if affine is None else affine
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    if slope_inter is not None:
        img.header.set_slope_inter(*slope_inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_positions: list[float] | None = None,
    origin: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    series_uid: str | None = None,
    skip: tuple[int, ...] = (),
    intercept: float = -1024.0,
) -> Path:
    """Write ``hu`` ``(rows, columns, slices)`` as an uncompressed CT series (one file per slice, shuffled names).

    Slice ``k`` lies at ``origin + slice_positions[k] * normal`` (LPS mm); stored values are HU - intercept.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols, n = hu.shape
    positions = slice_positions if slice_positions is not None else [2.5 * k for k in range(n)]
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    normal = np.cross(orientation[:3], orientation[3:])
    order = np.random.default_rng(1).permutation(n)  # file names do not follow slice order
    for rank, k in enumerate(order):
        if k in skip:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = "CT"
        ds.PatientID = "SYNTH"
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + positions[k] * normal]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope, ds.RescaleIntercept = 1.0, intercept
        ds.PixelData = np.ascontiguousarray((hu[:, :, k] - intercept).astype(np.int16)).tobytes()
        ds.save_as(folder / f"IM{rank:04d}.dcm", enforce_file_format=True)
    return folder
