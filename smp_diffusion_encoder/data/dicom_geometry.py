"""Where the slices of a DICOM series lie, and the one voxel grid that holds them exactly (or why none does).

A NIfTI (or ITK) image is a regular grid: slice ``k`` lies at ``origin + k * step``, its pixels on two
orthogonal axes. A DICOM series only lists each slice's ``ImagePositionPatient`` (IPP), so
:func:`slice_grid` checks that the slices, sorted along the slice normal ``n = row x column``, are

* **distinct**: no two at the same position (duplicates, or two series in one folder);
* **equally spaced and collinear**: every IPP within :data:`SLICE_POSITION_TOLERANCE` times the spacing of
  its place on the line from the first to the last slice. Otherwise the series is refused with a
  :class:`~smp_diffusion_encoder.errors.DicomSeriesError` that says which case it is: **missing slices**
  (every gap a whole multiple of the common spacing) or **variable spacing** (gaps that are not, e.g. a
  scanner protocol switching from 1.25 to 2.5 mm): it lists the runs of equal gaps, how far a uniform grid
  would move a slice, and what to do. Placing such slices on a uniform grid, as a "mean spacing" would,
  puts labels millimetres away from the anatomy they were predicted on; we never do that.
* **orthogonal to their planes**, or else **sheared**: with a gantry tilt (CT) the table moves along the
  patient axis while the slice planes are tilted, so IPP moves by ``step = a * n + b`` with an in-plane part
  ``b``. Such a grid has a sheared voxel-to-world matrix, which NIfTI can only hold in the sform (the qform
  is rigid) and which ITK refuses (it falls back to the qform, up to millimetres off). Like dcm2niix, the
  stack is then resampled onto the orthogonal grid ``(row, column, n)`` whose slices are the acquired slice
  planes: slice ``k`` is shifted in-plane by its IPP's offset (linear interpolation; whole-pixel shifts are
  exact), and the grid is enlarged so that no pixel is cropped (the new border holds the series' minimum
  value, the scanner's padding). Every voxel then sits where its pixel was acquired, and nibabel and
  SimpleITK read the written file identically. A :class:`~smp_diffusion_encoder.errors.GeometryWarning`
  names the folder and the tilt angle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from smp_diffusion_encoder.errors import DicomSeriesError

#: Each slice may lie this fraction of the slice spacing away from its place on the uniform grid.
SLICE_POSITION_TOLERANCE: float = 0.05
#: An in-plane drift of the slice positions up to this (mm, over the whole stack) is not a tilt: ignored.
TILT_TOLERANCE_MM: float = 0.01
#: Slices closer than this (mm) along the normal are duplicates.
DUPLICATE_TOLERANCE_MM: float = 1e-3


@dataclass(frozen=True)
class SliceGrid:
    """The orthogonal voxel grid of a series.

    Attributes:
        affine_lps: 4x4 voxel ``(column i, row j, slice k)`` -> LPS mm; its columns are orthogonal.
        shape: ``(columns, rows, slices)`` of the grid (larger than a slice when a tilt was corrected).
        shifts: ``(slices, 2)`` position of each acquired slice's first pixel on the grid, in
            ``(column, row)`` pixels; all zero without tilt.
        tilt_degrees: angle between the slice normal and the direction the slices advance (0 without tilt).
        spacing: distance between slice planes, mm.
    """

    affine_lps: np.ndarray
    shape: tuple[int, int, int]
    shifts: np.ndarray
    tilt_degrees: float
    spacing: float

    @property
    def sheared(self) -> bool:
        """True when the acquired slices are shifted in-plane on the grid (the stack must be resampled)."""
        return bool(np.any(self.shifts != 0))

    def resample(self, stack: np.ndarray) -> np.ndarray:
        """``(rows, columns, slices)`` acquired pixels -> the grid's ``(rows', columns', slices)``: each slice
        shifted by its ``shifts`` (linear interpolation), the new border filled with the stack's minimum."""
        if not self.sheared:
            return stack
        columns, rows, _ = self.shape
        fill = float(stack.min())
        out = np.empty((rows, columns, stack.shape[2]), dtype=np.float32)
        for k in range(stack.shape[2]):
            d_col, d_row = self.shifts[k]
            ndimage.affine_transform(
                stack[:, :, k],
                np.eye(2),
                offset=(-d_row, -d_col),
                output_shape=(rows, columns),
                output=out[:, :, k],
                order=1,
                mode="constant",
                cval=fill,
            )
        return out


def slice_grid(
    folder: Path,
    positions: np.ndarray,
    names: list[str],
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    pixel_spacing: tuple[float, float],
    size: tuple[int, int],
    thickness: float,
) -> SliceGrid:
    """The orthogonal grid holding every slice at its acquired position (see the module docstring).

    Args:
        folder: the series folder, for messages.
        positions: ``(slices, 3)`` IPP in LPS mm, sorted along the normal ``row_dir x col_dir``.
        names: file name (and frame) of each slice, same order, for messages.
        row_dir, col_dir: unit direction cosines of rows and columns (``ImageOrientationPatient``).
        pixel_spacing: ``(between rows, between columns)`` mm.
        size: ``(rows, columns)`` of a slice.
        thickness: slice distance (mm) to use for a single-slice series.

    Raises:
        DicomSeriesError: duplicate positions, missing slices, or variable slice spacing.
    """
    dr, dc = pixel_spacing
    normal = np.cross(row_dir, col_dir)
    n = len(positions)
    rows, columns = size
    if n == 1:
        return _grid(positions[0], row_dir, col_dir, normal, dr, dc, thickness, np.zeros((1, 2)), (columns, rows, 1))
    along_normal = positions @ normal
    gaps_normal = np.diff(along_normal)
    if (gaps_normal < DUPLICATE_TOLERANCE_MM).any():
        k = int(np.argmax(gaps_normal < DUPLICATE_TOLERANCE_MM))
        raise DicomSeriesError(
            folder,
            f"two slices at the same position {along_normal[k]:.3f} mm ({names[k]}, {names[k + 1]}); duplicate "
            f"slices or several series",
        )
    step = (positions[-1] - positions[0]) / (n - 1)
    spacing = float(step @ normal)
    offsets = positions - positions[0]
    drift_mm = np.abs(np.stack([offsets @ row_dir, offsets @ col_dir], axis=1)).max()
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(step - spacing * normal), spacing)))
    uniform = positions[0] + np.arange(n)[:, None] * step
    off_grid = np.linalg.norm(positions - uniform, axis=1)
    if off_grid.max() > SLICE_POSITION_TOLERANCE * spacing:
        raise _irregular(folder, positions, names, step, off_grid, tilt if drift_mm > TILT_TOLERANCE_MM else 0.0)
    if drift_mm <= TILT_TOLERANCE_MM:
        return _grid(positions[0], row_dir, col_dir, normal, dr, dc, spacing, np.zeros((n, 2)), (columns, rows, n))
    in_plane = np.stack([offsets @ row_dir / dc, offsets @ col_dir / dr], axis=1)  # (column, row) pixels
    low = in_plane.min(axis=0)
    shifts = in_plane - low  # >= 0: the grid starts at the lowest shifted first pixel
    shifts = np.where(np.abs(shifts - np.rint(shifts)) < 1e-6, np.rint(shifts), shifts)  # whole pixels: exact
    extra = np.ceil(shifts.max(axis=0) - 1e-6).astype(int)
    origin = positions[0] + low[0] * dc * row_dir + low[1] * dr * col_dir
    grid = _grid(origin, row_dir, col_dir, normal, dr, dc, spacing, shifts, (columns + extra[0], rows + extra[1], n))
    return SliceGrid(grid.affine_lps, grid.shape, grid.shifts, tilt, spacing)


def _grid(
    origin: np.ndarray,
    row_dir: np.ndarray,
    col_dir: np.ndarray,
    normal: np.ndarray,
    dr: float,
    dc: float,
    spacing: float,
    shifts: np.ndarray,
    shape: tuple[int, int, int],
) -> SliceGrid:
    lps = np.eye(4)
    lps[:3, 0] = row_dir * dc
    lps[:3, 1] = col_dir * dr
    lps[:3, 2] = normal * spacing
    lps[:3, 3] = origin
    return SliceGrid(lps, tuple(int(v) for v in shape), shifts, 0.0, spacing)  # type: ignore[arg-type]


def _irregular(
    folder: Path, positions: np.ndarray, names: list[str], step: np.ndarray, off_grid: np.ndarray, tilt: float
) -> DicomSeriesError:
    """The error for slices that no uniform grid holds: missing slices, or variable spacing."""
    axis = step / np.linalg.norm(step)  # the direction the slices advance (the table axis with a tilt)
    along = positions @ axis
    gaps = np.diff(along)
    also = (
        f" (the series also has a gantry tilt of {tilt:.1f} degrees, which is corrected once the slices are regular)"
        if tilt
        else ""
    )
    counts = [int((np.abs(gaps - g) <= SLICE_POSITION_TOLERANCE * g).sum()) for g in gaps]
    common = float(
        np.median(
            gaps[np.abs(gaps - gaps[int(np.argmax(counts))]) <= SLICE_POSITION_TOLERANCE * gaps[int(np.argmax(counts))]]
        )
    )
    multiples = gaps / common
    whole = np.abs(multiples - np.rint(multiples)) <= SLICE_POSITION_TOLERANCE * np.maximum(np.rint(multiples), 1)
    if whole.all() and (np.rint(multiples) >= 1).all():
        big = np.flatnonzero(np.rint(multiples) > 1)
        k = int(big[0])
        missing = int(np.rint(multiples[k])) - 1
        return DicomSeriesError(
            folder,
            f"missing slices: gap of {gaps[k]:.3f} mm between positions {along[k]:.3f} and {along[k + 1]:.3f} mm "
            f"(slices {k + 1} and {k + 2} of {len(gaps) + 1}, {names[k]} -> {names[k + 1]}), common spacing "
            f"{common:.3f} mm: about {missing} slice(s) missing"
            + (f" ({big.size} gaps in all)" if big.size > 1 else "")
            + f"; export the complete series{also}",
        )
    worst = int(np.argmax(off_grid))
    listed = ", ".join(
        f"{end - start} {'gap' if end - start == 1 else 'gaps'} of {gap:.3f} mm (slices {start + 1}-{end + 1}"
        + (f", {names[start]} -> {names[end]})" if end - start == 1 else ")")
        for gap, start, end in _runs(gaps)
    )
    segments = ", ".join(f"{a + 1}-{b + 1} ({gaps[a]:.3f} mm)" for a, b in _segments(gaps) if b > a)
    return DicomSeriesError(
        folder,
        f"variable slice spacing (not missing slices: the gaps are not multiples of one spacing): {listed}; "
        f"positions {along[0]:.3f} to {along[-1]:.3f} mm. A NIfTI/ITK grid holds equally spaced slices only: "
        f"spread evenly, slice {worst + 1} ({names[worst]}) would sit {off_grid[worst]:.2f} mm from where it was "
        f"acquired, so the series is refused rather than misplaced. Split it into series of equal spacing, each "
        f"in its own folder (slices {segments}), or resample it onto a uniform grid first{also}",
    )


def _runs(gaps: np.ndarray) -> list[tuple[float, int, int]]:
    """Consecutive equal gaps (within the tolerance) as ``(mean gap, first slice, last slice)``, 0-based."""
    runs: list[tuple[float, int, int]] = []
    start = 0
    for k in range(1, len(gaps) + 1):
        if k == len(gaps) or abs(gaps[k] - gaps[start]) > SLICE_POSITION_TOLERANCE * gaps[start]:
            runs.append((float(np.mean(gaps[start:k])), start, k))
            start = k
    return runs


def _segments(gaps: np.ndarray) -> list[tuple[int, int]]:
    """The slices split greedily into equally spaced series, ``(first, last)`` 0-based, covering each once."""
    segments, first, n = [], 0, len(gaps) + 1
    while first < n:
        last = first + 1 if first + 1 < n else first
        while last + 1 < n and abs(gaps[last] - gaps[first]) <= SLICE_POSITION_TOLERANCE * gaps[first]:
            last += 1
        segments.append((first, last))
        first = last + 1
    return segments
