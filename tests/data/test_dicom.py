"""DICOM series reading: geometry agrees with NIfTI, HU rescaling, and every broken series is refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest

from smp_diffusion_encoder.data.dicom import is_dicom_folder
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from smp_diffusion_encoder.errors import CorruptFileError, DicomSeriesError
from tests.data.synthetic_volumes import synthetic_ct, write_dicom_series, write_nifti

ROWS, COLS, SLICES = 12, 10, 5
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def unique_hu() -> np.ndarray:
    """(rows, cols, slices) int16 HU, every voxel distinct so it can be found again."""
    return (np.arange(ROWS * COLS * SLICES).reshape(ROWS, COLS, SLICES) - 1000).astype(np.int16)


def test_dicom_and_nifti_of_the_same_volume_agree(tmp_path: Path) -> None:
    hu = unique_hu()
    folder = write_dicom_series(tmp_path / "series", hu, pixel_spacing=(0.8, 0.7), origin=(-10, -20, 30))
    assert is_dicom_folder(folder)
    dcm = read_volume(folder)
    # the same volume as NIfTI: voxel (i=column, j=row, k=slice), RAS affine
    affine = np.array([[-0.7, 0, 0, 10.0], [0, -0.8, 0, 20.0], [0, 0, 2.5, 30.0], [0, 0, 0, 1]])
    nii = read_volume(write_nifti(tmp_path / "same.nii.gz", np.ascontiguousarray(hu.transpose(1, 0, 2)), affine))
    np.testing.assert_array_equal(dcm.array, nii.array)
    np.testing.assert_allclose(dcm.canonical_affine, nii.canonical_affine, atol=1e-5)
    assert dcm.spacing == pytest.approx((2.5, 0.8, 0.7))
    np.testing.assert_array_equal(dcm.array, hu.transpose(2, 0, 1))  # axial LPS series is already canonical


@pytest.mark.parametrize(
    "orientation, positions",
    [
        ((1, 0, 0, 0, 1, 0), [0.0, 2.5, 5.0, 7.5, 10.0]),
        ((-1, 0, 0, 0, 1, 0), [0.0, 2.5, 5.0, 7.5, 10.0]),  # normal points inferior
        ((0, 1, 0, 0, 0, -1), [4.0, 1.0, -2.0, -5.0, -8.0]),  # sagittal, positions listed out of order
    ],
)
def test_world_coordinates_follow_dicom_geometry(tmp_path: Path, orientation, positions) -> None:
    hu = unique_hu()
    folder = write_dicom_series(tmp_path / "s", hu, orientation=orientation, slice_positions=positions)
    vol = read_volume(folder)
    row_dir, col_dir = np.array(orientation[:3], float), np.array(orientation[3:], float)
    normal = np.cross(row_dir, col_dir)
    for r, c, k in [(0, 0, 0), (11, 9, 4), (3, 7, 2)]:
        lps = np.array([-10, -20, 30.0]) + positions[k] * normal + c * 0.7 * row_dir + r * 0.8 * col_dir
        z, y, x = np.argwhere(vol.array == hu[r, c, k])[0]
        ras = vol.canonical_affine @ [x, y, z, 1]
        np.testing.assert_allclose(ras, LPS_TO_RAS @ [*lps, 1], atol=1e-4)


def test_rescale_intercept_gives_hu(tmp_path: Path) -> None:
    hu = unique_hu()
    vol = read_volume(write_dicom_series(tmp_path / "s", hu, intercept=-1000.0))
    assert vol.array.min() == -1000 and vol.array.dtype == np.float32


def test_labels_written_against_a_dicom_reference_round_trip(tmp_path: Path) -> None:
    vol = read_volume(write_dicom_series(tmp_path / "s", unique_hu()))
    labels = (vol.array > -800).astype(np.uint8)
    back = read_volume(write_label_map(labels, vol, tmp_path / "pred.nii.gz"), kind="label")
    np.testing.assert_array_equal(back.array, labels)
    np.testing.assert_allclose(back.canonical_affine, vol.canonical_affine, atol=1e-5)


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not dicom")
    with pytest.raises(DicomSeriesError, match=r"empty: holds no DICOM image files"):
        read_volume(tmp_path / "empty")


def test_mixed_series_are_refused(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "mixed", unique_hu(), series_uid="1.2.3.4")
    other = write_dicom_series(tmp_path / "b", unique_hu(), series_uid="1.2.3.5")
    for f in other.iterdir():
        shutil.copy(f, folder / f"B_{f.name}")
    with pytest.raises(
        DicomSeriesError,
        match=r"mixed: folder holds 2 series: 1\.2\.3\.4 \(5 files\), "
        r"1\.2\.3\.5 \(5 files\); pass one series folder",
    ):
        read_volume(folder)


def test_missing_slice_is_reported_with_its_position(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "gap", unique_hu(), skip=(2,))
    with pytest.raises(
        DicomSeriesError,
        match=r"gap: missing slices: gap of 5\.000 mm between positions "
        r"32\.500 and 37\.500 mm \(slices 2 and 3 of 4, IM\d+\.dcm -> IM\d+\.dcm\), "
        r"common spacing 2\.500 mm: about 1 slice\(s\) missing",
    ):
        read_volume(folder)


def _edit_one(folder: Path, **changes) -> None:
    path = sorted(folder.iterdir())[0]
    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_inconsistent_orientation_is_refused(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "tilt", unique_hu())
    _edit_one(folder, ImageOrientationPatient=[1, 0, 0, 0, 0.995, 0.0998749])
    with pytest.raises(
        DicomSeriesError,
        match=r"tilt: inconsistent ImageOrientationPatient across slices: "
        r"\[1, 0, 0, 0, 0\.995, 0\.0998749\] in IM0000\.dcm vs \[1, 0, 0, 0, 1, 0\] "
        r"in IM0001\.dcm",
    ) as info:
        read_volume(folder)
    assert "np.float64" not in str(info.value)


def test_inconsistent_pixel_spacing_is_refused(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "px", unique_hu())
    _edit_one(folder, PixelSpacing=[0.9, 0.7])
    with pytest.raises(
        DicomSeriesError,
        match=r"px: inconsistent PixelSpacing across slices: \[0\.9, 0\.7\] mm in "
        r"IM0000\.dcm vs \[0\.8, 0\.7\] mm in IM0001\.dcm",
    ):
        read_volume(folder)


def test_odd_slice_size_names_the_file(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "size", unique_hu())
    odd = write_dicom_series(tmp_path / "other", np.zeros((10, 12, 5), np.int16), series_uid="9.9")
    path = sorted(odd.iterdir())[0]
    ds = pydicom.dcmread(path)
    ref = pydicom.dcmread(sorted(folder.iterdir())[0])
    ds.SeriesInstanceUID = ref.SeriesInstanceUID
    ds.ImagePositionPatient = [-10.0, -20.0, 40.0]
    sorted(folder.iterdir())[-1].unlink()
    ds.save_as(folder / "ODD.dcm")
    with pytest.raises(
        DicomSeriesError,
        match=r"size: slices have different sizes \(rows x columns\): ODD\.dcm is "
        r"10x12 but 4 of 5 \(e\.g\. IM0000\.dcm\) are 12x10",
    ):
        read_volume(folder)


def test_duplicate_slice_positions_are_refused(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "dup", unique_hu(), slice_positions=[0.0, 2.5, 2.5, 5.0, 7.5])
    with pytest.raises(DicomSeriesError, match=r"dup: two slices at the same position"):
        read_volume(folder)


@pytest.mark.parametrize(
    ("cut", "problem"),
    [
        (lambda n: n // 3, r"is truncated: a CT Image Storage file of \d+ bytes that ends before its pixel data"),
        (lambda n: n - 100, r"is truncated: its pixel data holds \d+ of \d+ bytes"),
    ],
)
def test_a_truncated_file_is_named_not_reported_as_missing_slices(tmp_path: Path, cut, problem: str) -> None:
    folder = write_dicom_series(tmp_path / "ct", synthetic_ct((24, 20, 6)).astype(np.float64))
    damaged = sorted(folder.iterdir())[2]
    data = damaged.read_bytes()
    damaged.write_bytes(data[: cut(len(data))])
    with pytest.raises(CorruptFileError, match=rf"^{re.escape(str(damaged))}: {problem}"):
        read_volume(folder)
