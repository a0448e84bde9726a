"""Real DICOM quirks in ../shared/data/realct_extra (skipped when absent): a GE head CT with an 18.5 degree
gantry tilt and variable slice distances (4.22, 1.14, 7.38 mm) must be reported for what is wrong with it,
and its regularly spaced part read with every pixel where it was acquired."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from smp_diffusion_encoder.data.dicom import series_geometry
from smp_diffusion_encoder.data.volume import read_volume, write_volume_like
from smp_diffusion_encoder.errors import DicomSeriesError, GeometryWarning

REALCT_EXTRA = Path(
    os.environ.get(
        "SMP_DIFFUSION_REALCT_EXTRA", Path(__file__).resolve().parents[2].parent / "shared/data/realct_extra"
    )
)
GE = REALCT_EXTRA / "dicom_quirks/ge_tilt_variable_spacing"
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

pytestmark = [
    pytest.mark.realct,
    pytest.mark.skipif(not GE.is_dir(), reason=f"real DICOM quirks not found at {GE}"),
]


def test_ge_series_is_refused_as_variable_spacing_with_its_tilt() -> None:
    with pytest.raises(DicomSeriesError) as info:
        read_volume(GE)
    message = str(info.value)
    assert message.startswith(f"{GE}: variable slice spacing (not missing slices")
    assert (
        "13 gaps of 4.220 mm (slices 1-14), 1 gap of 1.140 mm (slices 14-15, 14.dcm -> 15.dcm), "
        "13 gaps of 7.380 mm (slices 15-28)"
    ) in message
    assert "(slices 1-14 (4.220 mm), 15-28 (7.380 mm))" in message
    assert "gantry tilt of 18.5 degrees" in message
    assert "slice(s) missing" not in message


@pytest.fixture(scope="module")
def ge_regular_part(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Slices 1-14 of the GE series (4.22 mm apart along the table), as the error message suggests."""
    folder = tmp_path_factory.mktemp("ge") / "part1"
    folder.mkdir()
    for i in range(1, 15):
        shutil.copy(GE / f"{i:02d}.dcm", folder)
    return folder


def test_ge_regular_part_is_tilt_corrected_and_read_alike_by_nibabel_and_simpleitk(
    ge_regular_part: Path, tmp_path: Path
) -> None:
    frames, grid = series_geometry(ge_regular_part)
    assert grid.tilt_degrees == pytest.approx(18.5, abs=0.05) and grid.spacing == pytest.approx(4.002, abs=1e-3)
    with pytest.warns(GeometryWarning, match=r"gantry tilt of 18\.5 degrees \(GantryDetectorTilt 18\.5\)"):
        vol = read_volume(ge_regular_part)
    path = write_volume_like(vol.array, vol, tmp_path / "ge.nii.gz", dtype=np.int16)
    nii, itk = nib.load(path), sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(itk).transpose(2, 1, 0), np.asanyarray(nii.dataobj))
    for k, frame in enumerate(frames):  # each slice's IPP is the world point of its first pixel in both readers
        index = (*grid.shifts[k], k)
        lps_itk = itk.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        np.testing.assert_allclose(lps_itk, frame.position, atol=1e-3)
        np.testing.assert_allclose(
            nib.affines.apply_affine(nii.affine, index), (LPS_TO_RAS @ [*frame.position, 1])[:3], atol=1e-3
        )
    # pixels are carried, not only placed: the slice that needs no shift is stored unchanged
    k0 = int(np.argmin(np.abs(grid.shifts).sum(axis=1)))
    assert not grid.shifts[k0].any()
    np.testing.assert_array_equal(np.asanyarray(nii.dataobj)[:512, :512, k0], frames[k0].hu().T)
