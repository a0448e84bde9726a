"""Tiny synthetic CT volumes written as NIfTI or as DICOM series, for the data and CLI tests.

A plain module (not conftest.py) so test files can import the helpers unambiguously:
``from tests.data.synthetic_volumes import write_nifti`` (``tests`` is a package mirroring the library).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, EnhancedCTImageStorage, ExplicitVRLittleEndian, RLELossless, generate_uid

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


def _ct_dataset(
    sop_class: str,
    transfer_syntax: str,
    series_uid: str,
    study_uid: str,
    frame_of_reference: str,
    rows: int,
    cols: int,
    intercept: float,
) -> Dataset:
    """A CT dataset with the patient/study/series attributes a PACS (and highdicom) expects; no geometry yet."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_of_reference
    ds.Modality = "CT"
    ds.PatientID = "SYNTH"
    ds.PatientName = "Synthetic^Phantom"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate, ds.StudyTime = "20240101", "120000"
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "A1", ""
    ds.SeriesNumber = 2
    ds.Manufacturer = "tests"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, intercept
    return ds


def write_dicom_series(
    folder: Path,
    hu: np.ndarray,
    *,
    pixel_spacing: tuple[float, float] = (0.8, 0.7),
    slice_positions: list[float] | None = None,
    origin: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    orientation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    slice_direction: tuple[float, float, float] | None = None,
    series_uid: str | None = None,
    skip: tuple[int, ...] = (),
    intercept: float = -1024.0,
    transfer_syntax: str = ExplicitVRLittleEndian,
    multiframe: bool = False,
) -> Path:
    """Write ``hu`` ``(rows, columns, slices)`` as a CT series (one file per slice, shuffled names).

    Slice ``k`` lies at ``origin + slice_positions[k] * slice_direction`` (LPS mm; the direction defaults to
    the slice normal; a gantry tilt moves the slices along the table axis ``(0, 0, 1)`` while the
    orientation's column direction is tilted); stored values are HU - intercept. ``transfer_syntax``:
    uncompressed, RLE Lossless (encoded by pydicom), or any other compressed syntax, for which the pixel
    data is an encapsulated placeholder no decoder can read (for decoder-error tests). ``multiframe``: one
    Enhanced CT file ``enhanced.dcm`` holding every slice as a frame (per-frame positions, shared orientation,
    pixel spacing and rescale).
    """
    folder.mkdir(parents=True, exist_ok=True)
    rows, cols, n = hu.shape
    positions = slice_positions if slice_positions is not None else [2.5 * k for k in range(n)]
    series_uid = series_uid or generate_uid()
    study_uid, frame_of_reference = generate_uid(), generate_uid()
    direction = np.cross(orientation[:3], orientation[3:]) if slice_direction is None else np.asarray(slice_direction)
    ipps = [[float(v) for v in np.asarray(origin) + positions[k] * direction] for k in range(n)]
    stored = np.ascontiguousarray((hu - intercept).astype(np.int16))
    if multiframe:
        ds = _ct_dataset(
            EnhancedCTImageStorage, transfer_syntax, series_uid, study_uid, frame_of_reference, rows, cols, intercept
        )
        keep = [k for k in range(n) if k not in skip]
        ds.NumberOfFrames = len(keep)
        shared = Dataset()
        shared.PlaneOrientationSequence = [Dataset()]
        shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(orientation)
        shared.PixelMeasuresSequence = [Dataset()]
        shared.PixelMeasuresSequence[0].PixelSpacing = list(pixel_spacing)
        shared.PixelMeasuresSequence[0].SliceThickness = 2.5
        shared.PixelValueTransformationSequence = [Dataset()]
        shared.PixelValueTransformationSequence[0].RescaleSlope = 1.0
        shared.PixelValueTransformationSequence[0].RescaleIntercept = intercept
        shared.PixelValueTransformationSequence[0].RescaleType = "HU"
        ds.SharedFunctionalGroupsSequence = [shared]
        per_frame = []
        for k in keep[::-1]:  # frames stored superior to inferior: the reader must sort them
            item = Dataset()
            item.PlanePositionSequence = [Dataset()]
            item.PlanePositionSequence[0].ImagePositionPatient = ipps[k]
            per_frame.append(item)
        ds.PerFrameFunctionalGroupsSequence = per_frame
        del ds.RescaleSlope, ds.RescaleIntercept
        _set_pixels(ds, np.stack([stored[:, :, k] for k in keep[::-1]]), transfer_syntax)
        ds.save_as(folder / "enhanced.dcm", enforce_file_format=True)
        return folder
    order = np.random.default_rng(1).permutation(n)  # file names do not follow slice order
    for rank, k in enumerate(order):
        if k in skip:
            continue
        ds = _ct_dataset(
            CTImageStorage, transfer_syntax, series_uid, study_uid, frame_of_reference, rows, cols, intercept
        )
        ds.InstanceNumber = int(k) + 1
        ds.ImagePositionPatient = ipps[k]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = 2.5
        _set_pixels(ds, stored[:, :, k], transfer_syntax)
        ds.save_as(folder / f"IM{rank:04d}.dcm", enforce_file_format=True)
    return folder


def _set_pixels(ds: Dataset, stored: np.ndarray, transfer_syntax: str) -> None:
    """Uncompressed, RLE-compressed, or an undecodable placeholder for other compressed syntaxes."""
    if transfer_syntax == ExplicitVRLittleEndian:
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
    elif transfer_syntax == RLELossless:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, np.ascontiguousarray(stored), encoding_plugin="pydicom")
    else:
        frames = stored.shape[0] if stored.ndim == 3 else 1
        ds.PixelData = encapsulate([b"\xff\xd8\xff\xc3 not a real bitstream \xff\xd9"] * frames)
        ds["PixelData"].VR = "OB"
