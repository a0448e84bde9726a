"""Read one DICOM CT series folder into a NIfTI image (then :func:`~.volume.read_volume` reorients it).

Frames: classic single-frame files and enhanced multi-frame files (Enhanced CT), see
:mod:`~smp_diffusion_encoder.data.dicom_frames`. Geometry: frames are sorted by their
``ImagePositionPatient`` projected on the slice normal ``n = row_direction x column_direction`` (from
``ImageOrientationPatient``). The voxel grid keeps DICOM's order, ``(i, j, k)`` = (column, row, slice), with

``world_LPS = IPP_0 + i * dc * row_dir + j * dr * col_dir + k * spacing * n``

where ``PixelSpacing = (dr, dc)`` (mm between rows, between columns). DICOM world coordinates are LPS,
NIfTI's are RAS, so the first two rows of the affine are negated. The grid is always orthogonal (qform and
sform say the same): series whose slices are not equally spaced are refused, and a gantry tilt is resampled
onto the acquired slice planes (:mod:`~smp_diffusion_encoder.data.dicom_geometry`). Voxels are converted to
HU with ``RescaleSlope``/``RescaleIntercept``.

Example:
    >>> from importlib.resources import files
    >>> img = read_dicom_series(files("smp_diffusion_encoder") / "demo_data/test/REALCT_Ts_0001/dicom")
    >>> img.shape                                                   # a NIfTI image in the file's voxel order
    (512, 512, 20)
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np

from smp_diffusion_encoder.data.dicom_frames import Frame, read_frames
from smp_diffusion_encoder.data.dicom_geometry import SliceGrid, slice_grid
from smp_diffusion_encoder.errors import ConfigError, DicomSeriesError, GeometryWarning

if TYPE_CHECKING:
    from smp_diffusion_encoder.data.volume import Volume

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Tolerances for "the same" orientation (direction cosines) and pixel size (mm) across slices.
ORIENTATION_TOLERANCE: float = 1e-4
PIXEL_SPACING_TOLERANCE_MM: float = 1e-3


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


def require_series_inputs(
    inputs: Sequence[os.PathLike[str] | str], output_format: str, what: str, alternatives: str
) -> None:
    """Refuse, before any model runs, inputs an output that references the CT slices cannot serve.

    Raises:
        ConfigError: naming ``output_format``, ``what`` references and the first inputs that are not DICOM series
            folders, with the ``alternatives`` to write for them.
    """
    not_dicom = [str(p) for p in inputs if not is_dicom_folder(Path(p))]
    if not_dicom:
        raise ConfigError(
            f"--output-format {output_format} needs DICOM series folders as inputs ({what} references the "
            f"CT slices); not DICOM: {', '.join(not_dicom[:5])}"
            + (f" and {len(not_dicom) - 5} more" if len(not_dicom) > 5 else "")
            + f"; use {alternatives} for them"
        )


def series_source(volume: Volume, labels: np.ndarray, output: str, alternatives: str) -> Path:
    """The DICOM series folder ``volume`` was read from, for an ``output`` that references its slices.

    Raises:
        ConfigError: ``volume`` was not read from a DICOM series folder (the message names the ``alternatives``),
            or ``labels`` is not ``(Z, Y, X)`` of ``volume``.
    """
    source = volume.source
    if source is None or not source.is_dir():
        raise ConfigError(
            f"{output} output needs a DICOM series folder as input (it references the CT slices); "
            f"{volume.name} is not one: write {alternatives} instead"
        )
    if np.shape(labels) != volume.array.shape:
        raise ConfigError(f"labels are {np.shape(labels)} but {volume.name} is (Z, Y, X) {volume.array.shape}")
    return source


def read_dicom_series(folder: str | os.PathLike[str]) -> nib.Nifti1Image:
    """Read the single CT series in ``folder`` (non-recursive) as a float32-HU NIfTI image.

    The image's voxel axes are DICOM's ``(column, row, slice)`` with slices sorted along the slice normal;
    its affine is RAS mm and orthogonal; qform and sform codes are 1 (scanner). A gantry tilt is corrected
    by resampling (warned with :class:`~smp_diffusion_encoder.errors.GeometryWarning`, naming the folder
    and the angle; the grid is then larger than a slice).

    Raises:
        DicomSeriesError: no DICOM images, several series mixed, duplicate or missing slices, variable slice
            spacing, inconsistent orientation / pixel spacing / size across slices, an unplaceable
            multi-frame file.
        CorruptFileError: a DICOM file whose header or pixel data cannot be decoded.
        MissingDecoderError: compressed pixel data without an installed decoder (names the extra to install).
    """
    folder = Path(folder)
    frames, grid = series_geometry(folder)
    stack = np.stack([f.hu() for f in frames], axis=-1)  # (rows, columns, slices)
    if grid.sheared:
        warnings.warn(_tilt_message(folder, frames, grid), GeometryWarning, stacklevel=2)
        stack = grid.resample(stack)
    data = np.ascontiguousarray(stack.transpose(1, 0, 2))  # -> (i=column, j=row, k=slice)
    affine = _LPS_TO_RAS @ grid.affine_lps
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm")
    return img


def series_geometry(folder: str | os.PathLike[str]) -> tuple[list[Frame], SliceGrid]:
    """The frames of the one series in ``folder``, sorted along the slice normal, and their voxel grid.

    Decodes no pixel data (:meth:`Frame.hu` does). Raises as :func:`read_dicom_series`.
    """
    folder = Path(folder)
    frames = read_frames(folder)
    _check_single_series(folder, frames)
    row_dir, col_dir = _common_orientation(folder, frames)
    pixel_spacing = _common_pixel_spacing(folder, frames)
    size = _common_size(folder, frames)
    normal = np.cross(row_dir, col_dir)
    order = np.argsort([float(f.position @ normal) for f in frames], kind="stable")
    frames = [frames[i] for i in order]
    first = frames[0].dataset
    thickness = float(first.get("SpacingBetweenSlices", first.get("SliceThickness", 1.0)) or 1.0)
    grid = slice_grid(
        folder,
        np.array([f.position for f in frames]),
        [f.name for f in frames],
        row_dir,
        col_dir,
        pixel_spacing,
        size,
        thickness,
    )
    return frames, grid


def _tilt_message(folder: Path, frames: list[Frame], grid: SliceGrid) -> str:
    tag = frames[0].dataset.get("GantryDetectorTilt")
    said = f" (GantryDetectorTilt {float(tag):g})" if tag not in (None, "") else ""
    columns, rows, _ = grid.shape
    return (
        f"{folder}: gantry tilt of {grid.tilt_degrees:.1f} degrees{said}: the slices are sheared, which NIfTI's "
        f"qform and ITK cannot hold; resampled onto an orthogonal grid whose slices are the acquired slice planes "
        f"(each slice shifted in-plane, linear interpolation; {columns}x{rows} pixels instead of "
        f"{frames[0].columns}x{frames[0].rows}, so that nothing is cropped). Outputs are written on that grid"
    )


def _fmt(values: np.ndarray | list[float] | tuple[float, ...]) -> str:
    """``[1, 0, 0, 0, 0.995, -0.09987]``: plain numbers, not numpy reprs."""
    return "[" + ", ".join(f"{float(v):.6g}" for v in values) + "]"


def _check_single_series(folder: Path, frames: list[Frame]) -> None:
    counts = Counter(f.series_uid for f in frames if f.index in (None, 0))
    if len(counts) > 1:
        listed = ", ".join(f"{uid} ({n} files)" for uid, n in sorted(counts.items()))
        raise DicomSeriesError(folder, f"folder holds {len(counts)} series: {listed}; pass one series folder")


def _common_orientation(folder: Path, frames: list[Frame]) -> tuple[np.ndarray, np.ndarray]:
    iops = np.array([f.orientation for f in frames])
    bad = np.abs(iops - iops[0]).max(axis=1) > ORIENTATION_TOLERANCE
    if bad.any():
        other = frames[int(np.argmax(bad))]
        raise DicomSeriesError(
            folder,
            f"inconsistent ImageOrientationPatient across slices: {_fmt(iops[0])} in {frames[0].name} vs "
            f"{_fmt(other.orientation)} in {other.name}",
        )
    row_dir, col_dir = iops[0, :3], iops[0, 3:]
    if (
        abs(np.linalg.norm(row_dir) - 1) > 1e-3
        or abs(np.linalg.norm(col_dir) - 1) > 1e-3
        or abs(row_dir @ col_dir) > 1e-3
    ):
        raise DicomSeriesError(
            folder, f"ImageOrientationPatient {_fmt(iops[0])} in {frames[0].name} is not two unit orthogonal vectors"
        )
    return row_dir / np.linalg.norm(row_dir), col_dir / np.linalg.norm(col_dir)


def _common_size(folder: Path, frames: list[Frame]) -> tuple[int, int]:
    sizes = Counter((f.rows, f.columns) for f in frames)
    common, n_common = sizes.most_common(1)[0]
    if len(sizes) > 1:
        odd = next(f for f in frames if (f.rows, f.columns) != common)
        example = next(f for f in frames if (f.rows, f.columns) == common)
        raise DicomSeriesError(
            folder,
            f"slices have different sizes (rows x columns): {odd.name} is {odd.rows}x{odd.columns} but "
            f"{n_common} of {len(frames)} (e.g. {example.name}) are {common[0]}x{common[1]}"
            + (
                f"; all sizes: {', '.join(f'{r}x{c} ({n})' for (r, c), n in sorted(sizes.items()))}"
                if len(sizes) > 2
                else ""
            ),
        )
    return common


def _common_pixel_spacing(folder: Path, frames: list[Frame]) -> tuple[float, float]:
    spacings = np.array([f.pixel_spacing for f in frames])
    bad = np.abs(spacings - spacings[0]).max(axis=1) > PIXEL_SPACING_TOLERANCE_MM
    if bad.any():
        other = frames[int(np.argmax(bad))]
        raise DicomSeriesError(
            folder,
            f"inconsistent PixelSpacing across slices: {_fmt(spacings[0])} mm in {frames[0].name} vs "
            f"{_fmt(other.pixel_spacing)} mm in {other.name}",
        )
    if (spacings[0] <= 0).any():
        raise DicomSeriesError(folder, f"PixelSpacing {_fmt(spacings[0])} in {frames[0].name} is not positive")
    return float(spacings[0, 0]), float(spacings[0, 1])
