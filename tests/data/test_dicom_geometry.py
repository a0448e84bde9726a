"""Slice placement of DICOM series: variable spacing refused, missing slices named, gantry tilt resampled so
that nibabel and SimpleITK both put every voxel where its pixel was acquired."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from smp_diffusion_encoder.data.dicom import series_geometry
from smp_diffusion_encoder.data.volume import read_volume, write_label_map, write_volume_like
from smp_diffusion_encoder.errors import DicomSeriesError, GeometryWarning
from tests.data.synthetic_volumes import write_dicom_series

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def unique_hu(rows: int = 12, cols: int = 10, slices: int = 5) -> np.ndarray:
    """(rows, cols, slices) int16 HU, every voxel distinct so it can be found again."""
    return (np.arange(rows * cols * slices).reshape(rows, cols, slices) - 1000).astype(np.int16)


def test_issue_example_variable_spacing_is_refused_not_misplaced(tmp_path: Path) -> None:
    """Five 1.25 mm gaps then six 2.5 mm gaps: a mean spacing would put the slice at 6.25 mm at 9.66 mm."""
    z = [1.25 * k for k in range(6)] + [8.75 + 2.5 * k for k in range(6)]
    folder = write_dicom_series(tmp_path / "varspace", unique_hu(slices=12), slice_positions=z, origin=(0, 0, 0))
    with pytest.raises(DicomSeriesError) as info:
        read_volume(folder)
    message = str(info.value)
    assert message.startswith(f"{folder}: variable slice spacing (not missing slices")
    assert "5 gaps of 1.250 mm (slices 1-6), 6 gaps of 2.500 mm (slices 6-12)" in message
    assert "positions 0.000 to 21.250 mm" in message
    assert "slice 6 (IM" in message and "would sit 3.41 mm from where it was acquired" in message
    assert "(slices 1-6 (1.250 mm), 7-12 (2.500 mm))" in message
    assert "missing" not in message.replace("not missing", "")


def test_one_odd_gap_is_variable_spacing(tmp_path: Path) -> None:
    z = [0.0, 2.5, 5.0, 6.0, 8.5, 11.0]  # a 1 mm gap is no multiple of 2.5 mm
    folder = write_dicom_series(tmp_path / "odd", unique_hu(slices=6), slice_positions=z, origin=(0, 0, 0))
    with pytest.raises(
        DicomSeriesError,
        match=r"variable slice spacing .*1 gap of 1\.000 mm \(slices 3-4, "
        r"IM\d+\.dcm -> IM\d+\.dcm\)",
    ):
        read_volume(folder)


def test_several_missing_slices_are_missing_not_variable(tmp_path: Path) -> None:
    folder = write_dicom_series(tmp_path / "holes", unique_hu(slices=8), skip=(2, 5, 6), origin=(0, 0, 0))
    with pytest.raises(
        DicomSeriesError,
        match=r"holes: missing slices: gap of 5\.000 mm between positions 2\.500 "
        r"and 7\.500 mm .*common spacing 2\.500 mm: about 1 slice\(s\) "
        r"missing \(2 gaps in all\)",
    ):
        read_volume(folder)


def test_jitter_within_tolerance_is_accepted_and_placed_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    z = [2.5 * k + float(rng.uniform(-0.04, 0.04)) for k in range(5)]
    z[0], z[-1] = 0.0, 10.0
    folder = write_dicom_series(tmp_path / "jitter", unique_hu(), slice_positions=z, origin=(0, 0, 0))
    vol = read_volume(folder)
    assert vol.spacing[0] == pytest.approx(2.5)
    for k in range(5):  # every slice within 0.05 x spacing of where it was acquired
        assert abs((vol.canonical_affine @ [0, 0, k, 1])[2] - z[k]) <= 0.05 * 2.5


def tilted_series(folder: Path, tilt_degrees: float, rows_per_slice: float, **kwargs) -> tuple[Path, np.ndarray]:
    """A GE-like gantry tilt: column direction tilted about x, slices advancing along the table (LPS z) by a
    distance that shifts each slice ``rows_per_slice`` rows in-plane. Returns the folder and the HU."""
    theta = np.radians(tilt_degrees)
    orientation = (1.0, 0.0, 0.0, 0.0, float(np.cos(theta)), -float(np.sin(theta)))
    table_step = rows_per_slice * 0.8 / np.sin(theta)  # 0.8 mm between rows
    hu = unique_hu(**kwargs)
    positions = [table_step * k for k in range(hu.shape[2])]
    return write_dicom_series(
        folder,
        hu,
        orientation=orientation,
        slice_direction=(0.0, 0.0, 1.0),
        slice_positions=positions,
        **({"pixel_spacing": (0.8, 0.7)}),
    ), hu


def dicom_pixels_lps(folder: Path) -> dict[int, np.ndarray]:
    """Every DICOM pixel's stored HU -> its LPS position (mm), computed from the files' own tags."""
    found = {}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ipp, iop = np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float)
        dr, dc = (float(v) for v in ds.PixelSpacing)
        hu = ds.pixel_array.astype(int) + int(ds.RescaleIntercept)
        for r in range(ds.Rows):
            for c in range(ds.Columns):
                found[int(hu[r, c])] = ipp + c * dc * iop[:3] + r * dr * iop[3:]
    return found


def test_gantry_tilt_is_resampled_so_nibabel_and_simpleitk_agree_with_the_dicom(tmp_path: Path) -> None:
    folder, hu = tilted_series(tmp_path / "tilt", 20.0, rows_per_slice=1.0)
    with pytest.warns(
        GeometryWarning,
        match=rf"^{folder}: gantry tilt of 20\.0 degrees.*resampled onto an "
        r"orthogonal grid",
    ) as record:
        vol = read_volume(folder)
    assert len(record) == 1
    assert vol.array.shape == (5, 12 + 4, 10)  # 4 rows added: slice k is shifted by k rows, nothing cropped
    image_path = write_volume_like(vol.array, vol, tmp_path / "image.nii.gz")
    labels = np.zeros(vol.array.shape, np.uint8)
    labels[vol.array == hu[3, 4, 2]] = 7  # one DICOM pixel labelled: row 3, column 4 of slice 2
    label_path = write_label_map(labels, vol, tmp_path / "labels.nii.gz")

    nii = nib.load(image_path)
    assert nii.header["qform_code"] == nii.header["sform_code"] == 1
    np.testing.assert_allclose(nii.header.get_qform(), nii.header.get_sform(), atol=1e-4)
    itk = sitk.ReadImage(str(image_path))
    itk_array = sitk.GetArrayFromImage(itk).transpose(2, 1, 0)  # (x, y, z) like nibabel's
    data = np.asanyarray(nii.dataobj)
    np.testing.assert_array_equal(itk_array, data)
    expected = dicom_pixels_lps(folder)
    assert (data == hu.min()).sum() == 1 + 4 * 10 * 5  # the series' minimum also fills the added rows
    for value, lps in expected.items():  # every acquired pixel, found in both readers at its DICOM position
        if value == hu.min():
            continue
        i, j, k = np.argwhere(data == value)[0]
        np.testing.assert_allclose(nii.affine @ [i, j, k, 1], LPS_TO_RAS @ [*lps, 1], atol=1e-4)
        np.testing.assert_allclose(itk.TransformIndexToPhysicalPoint((int(i), int(j), int(k))), lps, atol=1e-4)
    # the label lands on the anatomy it was given to, in both readers
    lab_nii, lab_itk = nib.load(label_path), sitk.ReadImage(str(label_path))
    i, j, k = np.argwhere(np.asanyarray(lab_nii.dataobj) == 7)[0]
    np.testing.assert_allclose(
        nib.affines.apply_affine(lab_nii.affine, (i, j, k)),
        (LPS_TO_RAS @ [*expected[int(hu[3, 4, 2])], 1])[:3],
        atol=1e-4,
    )
    index = lab_itk.TransformPhysicalPointToIndex(tuple(expected[int(hu[3, 4, 2])]))
    assert lab_itk[index] == 7


def test_fractional_tilt_places_each_slice_first_pixel_at_its_position(tmp_path: Path) -> None:
    folder, _ = tilted_series(tmp_path / "tilt", 18.5, rows_per_slice=0.37, slices=6)
    frames, grid = series_geometry(folder)
    assert grid.tilt_degrees == pytest.approx(18.5, abs=1e-6) and grid.sheared
    for k, frame in enumerate(frames):  # IPP of slice k == the grid's (shifted) index of its first pixel
        col, row = grid.shifts[k]
        np.testing.assert_allclose(grid.affine_lps @ [col, row, k, 1], [*frame.position, 1], atol=1e-6)
    with pytest.warns(GeometryWarning):
        vol = read_volume(folder)
    itk = sitk.ReadImage(str(write_volume_like(vol.array, vol, tmp_path / "t.nii.gz")))
    nii = nib.load(tmp_path / "t.nii.gz")
    for index in [(0, 0, 0), (9, 13, 5), (3, 7, 2)]:
        np.testing.assert_allclose(
            LPS_TO_RAS[:3, :3] @ itk.TransformIndexToPhysicalPoint(index),
            nib.affines.apply_affine(nii.affine, index),
            atol=1e-4,
        )


def test_untilted_series_is_not_resampled(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    folder = write_dicom_series(tmp_path / "plain", unique_hu())
    _, grid = series_geometry(folder)
    assert not grid.sheared and grid.tilt_degrees == 0.0
    assert read_volume(folder).array.shape == (5, 12, 10)
    assert not [w for w in recwarn if issubclass(w.category, GeometryWarning)]
