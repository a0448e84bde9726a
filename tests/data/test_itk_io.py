"""NRRD and MetaImage volumes: the same canonical volume and world grid as NIfTI, exact round trips."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from smp_diffusion_encoder.data.flare import FlareDataset, discover_volumes
from smp_diffusion_encoder.data.volume import check_pair, read_volume, write_label_map, write_volume_like
from smp_diffusion_encoder.errors import ConfigError, CorruptFileError, InvalidVolumeError
from tests.data.synthetic_volumes import PERMUTED_AFFINE, synthetic_ct, synthetic_labels, write_nifti

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: An oblique-free but permuted, flipped ITK grid: index axes (i, j, k) along LPS (-y, +x, -z) (cf. PERMUTED_AFFINE).
DIRECTION = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-12.5, 30.25, 100.0)


def write_itk(
    path: Path, data_ijk: np.ndarray, direction: np.ndarray = DIRECTION, spacing=SPACING, origin=ORIGIN
) -> Path:
    """Write file-order ``(i, j, k)`` data with SimpleITK (a stand-in for Slicer / grand-challenge files)."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(data_ijk.transpose(2, 1, 0)))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(direction.reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), useCompression=True)
    return path


def unique_ct(shape=(24, 20, 8)) -> np.ndarray:
    return (np.arange(np.prod(shape)).reshape(shape) - 1000).astype(np.int16)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".mhd", ".nhdr"])
def test_itk_files_are_placed_by_their_own_geometry(tmp_path: Path, suffix: str) -> None:
    data = unique_ct()
    vol = read_volume(write_itk(tmp_path / f"ct{suffix}", data))
    assert vol.original_shape == data.shape and vol.array.dtype == np.float32
    for ijk in [(0, 0, 0), (23, 19, 7), (5, 11, 3)]:
        lps = np.array(ORIGIN) + DIRECTION @ (np.array(SPACING) * ijk)
        z, y, x = np.argwhere(vol.array == data[ijk])[0]
        np.testing.assert_allclose(vol.canonical_affine @ [x, y, z, 1], LPS_TO_RAS @ [*lps, 1], atol=1e-5)
    assert nib.aff2axcodes(vol.canonical_affine) == ("L", "P", "S")


def test_nrrd_and_nifti_of_the_same_volume_agree(tmp_path: Path) -> None:
    nifti = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct(), PERMUTED_AFFINE))
    itk = sitk.ReadImage(str(tmp_path / "ct.nii.gz"))
    sitk.WriteImage(itk, str(tmp_path / "ct.nrrd"))
    nrrd = read_volume(tmp_path / "ct.nrrd")
    np.testing.assert_array_equal(nrrd.array, nifti.array)
    np.testing.assert_allclose(nrrd.canonical_affine, nifti.canonical_affine, atol=1e-5)
    check_pair(
        nifti, read_volume(write_itk(tmp_path / "l.mha", synthetic_labels(), *_itk_grid(PERMUTED_AFFINE)), kind="label")
    )


def _itk_grid(affine: np.ndarray) -> tuple[np.ndarray, tuple, tuple]:
    lps = LPS_TO_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    return lps[:3, :3] / spacing, tuple(spacing), tuple(lps[:3, 3])


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_label_map_round_trip_keeps_the_grid(tmp_path: Path, suffix: str) -> None:
    src = write_itk(tmp_path / f"labels{suffix}", synthetic_labels())
    ref = read_volume(src, kind="label")
    os.umask(old := os.umask(0o022))
    out = write_label_map(ref.array, ref, tmp_path / "out" / f"pred{suffix}")
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(str(out))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(b), sitk.GetArrayFromImage(a))
    assert b.GetPixelID() == sitk.sitkUInt8 and b.GetSize() == a.GetSize()
    for get in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(b, get)(), getattr(a, get)(), atol=1e-9)
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # one file, no temporary left
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~old


def test_probabilities_are_a_vector_image(tmp_path: Path) -> None:
    ref = read_volume(write_itk(tmp_path / "ct.mha", unique_ct()))
    prob = np.random.default_rng(0).random((3, *ref.array.shape)).astype(np.float32)
    img = sitk.ReadImage(str(write_volume_like(prob, ref, tmp_path / "prob.mha")))
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == (24, 20, 8)
    back = sitk.GetArrayFromImage(img).transpose(2, 1, 0, 3)  # (i, j, k, C)
    np.testing.assert_array_equal(ref.to_canonical(back), prob)


def test_nifti_reference_written_as_nrrd_keeps_world_positions(tmp_path: Path) -> None:
    ref = read_volume(write_nifti(tmp_path / "ct.nii.gz", synthetic_ct(), PERMUTED_AFFINE))
    back = read_volume(write_volume_like(ref.array, ref, tmp_path / "ct.nrrd"))
    np.testing.assert_array_equal(back.array, ref.array)
    np.testing.assert_allclose(back.canonical_affine, ref.canonical_affine, atol=1e-6)


def test_sheared_reference_cannot_be_written_as_nrrd(tmp_path: Path) -> None:
    sheared = np.diag([0.7, 0.8, 2.5, 1.0])
    sheared[1, 2] = 0.8
    img = nib.Nifti1Image(synthetic_ct(), sheared)
    img.set_qform(np.diag([0.7, 0.8, 2.5, 1.0]), code=0)
    img.set_sform(sheared, code=1)
    nib.save(img, tmp_path / "sheared.nii.gz")
    ref = read_volume(tmp_path / "sheared.nii.gz")
    with pytest.raises(ConfigError, match=r"sheared \(non-orthogonal affine\).*write NIfTI"):
        write_label_map(np.zeros(ref.array.shape, np.uint8), ref, tmp_path / "x.nrrd")
    assert not list(tmp_path.glob("*.nrrd"))


def test_corrupt_vector_and_2d_itk_files_are_refused(tmp_path: Path) -> None:
    good = write_itk(tmp_path / "ct.nrrd", unique_ct())
    bad = tmp_path / "cut.nrrd"
    bad.write_bytes(good.read_bytes()[:300])
    with pytest.raises(CorruptFileError, match=r"cut\.nrrd: cannot read as NRRD \(SimpleITK: "):
        read_volume(bad)
    mhd = write_itk(tmp_path / "lost.mhd", unique_ct())
    (tmp_path / "lost.zraw").unlink()
    with pytest.raises(CorruptFileError, match=r"lost\.mhd: cannot read as MetaImage"):
        read_volume(mhd)
    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(InvalidVolumeError, match=r"rgb\.mha: has 3 values per voxel"):
        read_volume(tmp_path / "rgb.mha")
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 6), np.int16)), str(tmp_path / "flat.nrrd"))
    with pytest.raises(InvalidVolumeError, match=r"flat\.nrrd: is 2D \(6x5\)"):
        read_volume(tmp_path / "flat.nrrd")


def test_8_bit_nrrd_is_not_ct(tmp_path: Path) -> None:
    path = write_itk(tmp_path / "png_like.nrrd", np.full((24, 20, 8), 128, np.uint8))
    with pytest.raises(InvalidVolumeError, match=r"png_like\.nrrd: does not look like CT .* 8-bit image"):
        read_volume(path)


def test_discovery_finds_itk_files_but_not_their_data_files(tmp_path: Path) -> None:
    write_itk(tmp_path / "a.mhd", unique_ct())  # + a.zraw
    write_itk(tmp_path / "b.nrrd", unique_ct())
    write_itk(tmp_path / "sub" / "c.mha", unique_ct())
    assert [p.relative_to(tmp_path).as_posix() for p in discover_volumes(tmp_path)] == ["a.mhd", "b.nrrd", "sub/c.mha"]


def test_flare_layout_with_nrrd_files(tmp_path: Path) -> None:
    """nnU-Net style: images `<case>_0000.nrrd`, labels `<case>.nrrd`."""
    lab = tmp_path / "Training/FLARE22_LabeledCase50"
    write_itk(lab / "images/C_0001_0000.nrrd", unique_ct())
    write_itk(lab / "labels/C_0001.nrrd", synthetic_labels())
    write_itk(tmp_path / "Training/FLARE22_UnlabeledCase1-1000/U_0001_0000.mha", unique_ct())
    ds = FlareDataset.discover(tmp_path)
    assert [(c.case_id, c.image.name, c.label.name) for c in ds.labeled] == [
        ("C_0001", "C_0001_0000.nrrd", "C_0001.nrrd")
    ]
    assert [c.case_id for c in ds.unlabeled] == ["U_0001"]
    check_pair(read_volume(ds.labeled[0].image), read_volume(ds.labeled[0].label, kind="label"))
