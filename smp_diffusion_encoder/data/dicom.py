"""Read one DICOM CT series folder into a NIfTI image (then :func:`~.volume.read_volume` reorients it).

Geometry: slices are sorted by their ``ImagePositionPatient`` projected on the slice normal
``n = row_direction x column_direction`` (from ``ImageOrientationPatient``). The voxel grid keeps DICOM's
order, ``(i, j, k)`` = (column, row, slice), with

``world_LPS = IPP_0 + i * dc * row_dir + j * dr * col_dir + k * slice_step``

where ``PixelSpacing = (dr, dc)`` (mm between rows, between columns). DICOM world coordinates are LPS,
NIfTI's are RAS, so the first two rows of the affine are negated. Voxels are converted to HU with
``RescaleSlope``/``RescaleIntercept``.

Example:
    >>> img = read_dicom_series("patient01/CT_abdomen")            # doctest: +SKIP
    >>> img.shape                                                   # doctest: +SKIP
    (512, 512, 90)
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError

from smp_diffusion_encoder.errors import CorruptFileError, DicomSeriesError

logger = logging.getLogger(__name__)

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Tolerances for "the same" orientation (direction cosines) and pixel size (mm) across slices.
ORIENTATION_TOLERANCE: float = 1e-4
PIXEL_SPACING_TOLERANCE_MM: float = 1e-3
#: A gap between neighbouring slices larger than this times the median spacing means missing slices.
MAX_GAP_FACTOR: float = 1.5


def is_dicom_file(path: Path) -> bool:
    """True for a file with the DICOM preamble (``DICM`` at byte 128) or a ``.dcm`` suffix."""
    if not path.is_file() or path.name.startswith("."):
        return False
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom_folder(folder: Path) -> bool:
    """True if ``folder`` directly holds at least one DICOM file."""
    return folder.is_dir() and any(is_dicom_file(p) for p in folder.iterdir())


def read_dicom_series(folder: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Read the single CT series in ``folder`` (non-recursive) as a float32-HU NIfTI image.

    The image's voxel axes are DICOM's ``(column, row, slice)`` with slices sorted along the slice normal;
    its affine is RAS mm; qform and sform codes are 1 (scanner).

    Raises:
        DicomSeriesError: no DICOM files, several series mixed, missing or duplicate slices, inconsistent
            orientation / pixel spacing / size across slices.
        CorruptFileError: a DICOM file whose header or pixel data cannot be decoded.
    """
    folder = Path(folder)
    datasets = _read_all(folder)
    _check_single_series(folder, datasets)
    row_dir, col_dir = _common_orientation(folder, datasets)
    dr, dc = _common_pixel_spacing(folder, datasets)
    normal = np.cross(row_dir, col_dir)
    positions = [np.asarray(ds.ImagePositionPatient, dtype=np.float64) for ds in datasets]
    order = np.argsort([float(p @ normal) for p in positions], kind="stable")
    datasets = [datasets[i] for i in order]
    positions = [positions[i] for i in order]
    slice_step = _slice_step(folder, datasets, positions, normal)

    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = slice_step
    lps[:3, 3] = positions[0]
    affine = _LPS_TO_RAS @ lps

    data = np.stack([_hu_pixels(ds) for ds in datasets], axis=-1)  # (rows, cols, slices)
    data = np.ascontiguousarray(data.transpose(1, 0, 2))  # -> (i=column, j=row, k=slice)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def _read_all(folder: Path) -> list[pydicom.Dataset]:
    if not folder.is_dir():
        raise DicomSeriesError(folder, "is not a folder")
    datasets = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.name.upper() == "DICOMDIR":
            continue
        try:
            ds = pydicom.dcmread(path, force=path.suffix.lower() == ".dcm")
        except InvalidDicomError:
            logger.debug("skipping non-DICOM file %s", path)
            continue
        except Exception as err:  # truncated files raise EOFError, OSError, struct errors...
            raise CorruptFileError(path, f"cannot read as DICOM ({type(err).__name__}: {err})") from err
        if "PixelData" not in ds:
            logger.debug("skipping DICOM file without pixel data %s", path)
            continue
        ds.filename = str(path)
        datasets.append(ds)
    if not datasets:
        raise DicomSeriesError(folder, "holds no DICOM image files")
    return datasets


def _check_single_series(folder: Path, datasets: list[pydicom.Dataset]) -> None:
    counts = Counter(str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")) for ds in datasets)
    if len(counts) > 1:
        listed = ", ".join(f"{uid} ({n} files)" for uid, n in sorted(counts.items()))
        raise DicomSeriesError(folder, f"folder holds {len(counts)} series: {listed}; pass one series folder")
    for tag in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        missing = [Path(ds.filename).name for ds in datasets if tag not in ds]
        if missing:
            raise DicomSeriesError(folder, f"{len(missing)} files lack {tag} (e.g. {missing[0]})")


def _common_orientation(folder: Path, datasets: list[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray]:
    iops = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    bad = np.abs(iops - iops[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if bad.any():
        other = datasets[int(np.argmax(bad))]
        raise DicomSeriesError(
            folder,
            f"inconsistent ImageOrientationPatient across slices: {list(np.round(iops[0], 5))} in "
            f"{Path(datasets[0].filename).name} vs {list(np.round(iops[bad][0], 5))} in "
            f"{Path(other.filename).name}",
        )
    row_dir, col_dir = iops[0, :3], iops[0, 3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 or abs(
        row_dir @ col_dir
    ) > 1e-3:
        raise DicomSeriesError(folder, f"ImageOrientationPatient {list(iops[0])} is not two unit orthogonal vectors")
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)


def _common_pixel_spacing(folder: Path, datasets: list[pydicom.Dataset]) -> tuple[float, float]:
    spacings = np.array([[float(v) for v in ds.PixelSpacing] for ds in datasets])
    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in datasets}
    if len(sizes) > 1:
        raise DicomSeriesError(folder, f"slices have different sizes (rows x columns): {sorted(sizes)}")
    bad = np.abs(spacings - spacings[0]).max(axis=1) > PIXEL_SPACING_TOLERANCE_MM
    if bad.any():
        other = datasets[int(np.argmax(bad))]
        raise DicomSeriesError(
            folder,
            f"inconsistent PixelSpacing across slices: {list(spacings[0])} mm in "
            f"{Path(datasets[0].filename).name} vs {list(spacings[bad][0])} mm in {Path(other.filename).name}",
        )
    if (spacings[0] <= 0).any():
        raise DicomSeriesError(folder, f"PixelSpacing {list(spacings[0])} is not positive")
    return float(spacings[0, 0]), float(spacings[0, 1])


def _slice_step(
    folder: Path, datasets: list[pydicom.Dataset], positions: list[np.ndarray], normal: np.ndarray
) -> np.ndarray:
    """World (LPS mm) vector from one slice to the next; checks for duplicate and missing slices."""
    if len(positions) == 1:
        thickness = float(datasets[0].get("SpacingBetweenSlices", datasets[0].get("SliceThickness", 1.0)) or 1.0)
        return normal * thickness
    along = np.array([p @ normal for p in positions])
    gaps = np.diff(along)
    if (gaps < 1e-3).any():
        k = int(np.argmax(gaps < 1e-3))
        raise DicomSeriesError(
            folder,
            f"two slices at the same position {along[k]:.3f} mm ({Path(datasets[k].filename).name}, "
            f"{Path(datasets[k + 1].filename).name}); duplicate slices or several series",
        )
    median = float(np.median(gaps))
    big = np.flatnonzero(gaps > MAX_GAP_FACTOR * median)
    if big.size:
        k = int(big[0])
        missing = int(round(gaps[k] / median)) - 1
        raise DicomSeriesError(
            folder,
            f"missing slices: gap of {gaps[k]:.3f} mm between positions {along[k]:.3f} and {along[k + 1]:.3f} mm "
            f"(slices {k} and {k + 1}, {Path(datasets[k].filename).name} -> "
            f"{Path(datasets[k + 1].filename).name}), median spacing {median:.3f} mm: about {missing} "
            f"slice(s) missing" + (f" ({big.size} gaps in all)" if big.size > 1 else ""),
        )
    if gaps.max() - gaps.min() > 0.01 * median + 1e-3:
        logger.warning("%s: slice spacing varies from %.4f to %.4f mm; using the mean", folder, gaps.min(), gaps.max())
    return (positions[-1] - positions[0]) / (len(positions) - 1)


def _hu_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """``(rows, columns)`` float32 HU of one slice."""
    try:
        pixels = ds.pixel_array
    except Exception as err:  # missing decoder plugin, truncated pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", "unknown")
        raise CorruptFileError(
            ds.filename,
            f"cannot decode pixel data (transfer syntax {syntax}): {err}. Compressed DICOM needs a decoder "
            f"plugin such as pylibjpeg",
        ) from err
    if pixels.ndim != 2:
        raise DicomSeriesError(ds.filename, f"pixel data is {pixels.shape}; expected one 2D slice per file")
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)
