"""read_volume / write_label_map / check_* : canonical orientation, exact round trip, every bad input."""

from __future__ import annotations

import gzip
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from smp_diffusion_encoder.data.volume import (
    check_label_ids,
    check_pair,
    read_volume,
    write_label_map,
    write_volume_like,
)
from smp_diffusion_encoder.errors import (
    ConfigError,
    CorruptFileError,
    GeometryWarning,
    InputFileError,
    InvalidVolumeError,
    LabelMismatchError,
)
from tests.data.synthetic_volumes import PERMUTED_AFFINE, synthetic_ct, synthetic_labels, write_nifti


def test_image_is_float32_hu_in_canonical_lps_orientation(ct_nifti: Path) -> None:
    vol = read_volume(ct_nifti)
    raw = synthetic_ct()  # file axes (i, j, k) point to (P, L, I)
    assert vol.array.dtype == np.float32
    assert vol.array.shape == (8, 24, 20)  # (Z, Y, X)
    # canonical x (to patient left) = file j; y (posterior) = file i; z (superior) = reversed file k
    np.testing.assert_array_equal(vol.array, raw[:, :, ::-1].transpose(2, 0, 1))
    assert vol.spacing == pytest.approx((2.5, 0.7, 0.8))
    assert nib.aff2axcodes(vol.canonical_affine) == ("L", "P", "S")
    np.testing.assert_array_equal(vol.affine, nib.load(ct_nifti).affine)
    np.testing.assert_allclose(vol.affine, PERMUTED_AFFINE, atol=1e-6)
    assert vol.original_shape == (24, 20, 8) and vol.source == ct_nifti


def test_canonical_arrays_agree_for_differently_stored_files(tmp_path: Path) -> None:
    """The same anatomy stored in RAS and in (P, L, I) order gives the same canonical array and world grid."""
    vol_a = read_volume(write_nifti(tmp_path / "a.nii.gz", synthetic_ct(), PERMUTED_AFFINE))
    ras_data = synthetic_ct()[:, :, ::-1].transpose(1, 0, 2)[::-1, ::-1, :]  # axes -> (R, A, S)
    ras_affine = PERMUTED_AFFINE @ nib.orientations.inv_ornt_aff(
        nib.orientations.ornt_transform(nib.io_orientation(PERMUTED_AFFINE), nib.orientations.axcodes2ornt("RAS")),
        (24, 20, 8),
    )
    vol_b = read_volume(write_nifti(tmp_path / "b.nii.gz", np.ascontiguousarray(ras_data), ras_affine))
    assert nib.aff2axcodes(ras_affine) == ("R", "A", "S")
    np.testing.assert_array_equal(vol_a.array, vol_b.array)
    np.testing.assert_allclose(vol_a.canonical_affine, vol_b.canonical_affine, atol=1e-5)


def test_slope_and_intercept_are_applied(tmp_path: Path) -> None:
    stored = (synthetic_ct() + 1024).astype(np.int16)
    vol = read_volume(write_nifti(tmp_path / "s.nii.gz", stored, slope_inter=(1.0, -1024.0)))
    assert vol.array.min() < -900 and vol.array.dtype == np.float32


@pytest.mark.parametrize("qform_code, sform_code", [(1, 1), (1, 0), (2, 4)])
def test_label_round_trip_is_exact(tmp_path: Path, qform_code: int, sform_code: int) -> None:
    labels = synthetic_labels()
    src = write_nifti(
        tmp_path / "l.nii.gz", labels.astype(np.int16), PERMUTED_AFFINE, qform_code=qform_code, sform_code=sform_code
    )
    ref = read_volume(src, kind="label")
    assert ref.array.dtype == np.uint8
    out = write_label_map(ref.array, ref, tmp_path / "out" / "pred.nii.gz")
    orig, back = nib.load(src), nib.load(out)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), labels)
    np.testing.assert_array_equal(back.affine, orig.affine)
    assert back.shape == orig.shape and back.get_data_dtype() == np.uint8
    for key in ("qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "srow_x", "pixdim"):
        np.testing.assert_array_equal(back.header[key], orig.header[key])
    assert not list(out.parent.glob(".*tmp*"))  # atomic: no temporary left


def test_write_volume_like_float_map_and_class_axis(ct_nifti: Path, tmp_path: Path) -> None:
    ref = read_volume(ct_nifti)
    prob = np.random.default_rng(0).random((3, *ref.array.shape)).astype(np.float32)
    back = nib.load(write_volume_like(prob, ref, tmp_path / "prob.nii"))
    assert back.shape == (24, 20, 8, 3)
    np.testing.assert_array_equal(back.affine, nib.load(ct_nifti).affine)
    np.testing.assert_allclose(read_volume_4d(back, ref), prob)
    single = nib.load(write_volume_like(prob[1], ref, tmp_path / "u.nii.gz"))
    np.testing.assert_array_equal(ref.to_canonical(np.asanyarray(single.dataobj)), prob[1])


def read_volume_4d(img: nib.Nifti1Image, ref) -> np.ndarray:
    return ref.to_canonical(np.asanyarray(img.dataobj))


def test_write_rejects_wrong_shape_and_suffix(ct_nifti: Path, tmp_path: Path) -> None:
    ref = read_volume(ct_nifti)
    with pytest.raises(ConfigError, match=r"reference ct_0000.nii.gz"):
        write_label_map(np.zeros((8, 24, 21), np.uint8), ref, tmp_path / "x.nii.gz")
    with pytest.raises(ConfigError, match=r"\.nii or \.nii\.gz"):
        write_label_map(np.zeros(ref.array.shape, np.uint8), ref, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="integer labels"):
        write_label_map(np.zeros(ref.array.shape, np.float32), ref, tmp_path / "x.nii.gz")


def test_labels_must_be_integers(tmp_path: Path) -> None:
    data = synthetic_labels().astype(np.float32)
    data[0, 0, 0] = 1.5
    path = write_nifti(tmp_path / "frac.nii.gz", data)
    with pytest.raises(
        InvalidVolumeError,
        match=r"frac\.nii\.gz: is not a label map: 1 float32 voxels are not "
        r"integers \(e\.g\. 1\.5, nearest integer 2\)",
    ):
        read_volume(path, kind="label")
    ok = read_volume(write_nifti(tmp_path / "f.nii.gz", synthetic_labels().astype(np.float32)), kind="label")
    assert ok.array.dtype == np.uint8


def test_near_integer_float_label_shows_the_exact_value(tmp_path: Path) -> None:
    """0.9999999 must not be shown as "1" (a message that contradicts itself)."""
    data = synthetic_labels().astype(np.float32)
    data[data == 1] = np.float32(0.9999999)
    path = write_nifti(tmp_path / "f32.nii.gz", data)
    n = int((synthetic_labels() == 1).sum())
    with pytest.raises(
        InvalidVolumeError,
        match=rf"{n} float32 voxels are not integers \(e\.g\. 0\.9999999, "
        r"nearest integer 1\)",
    ):
        read_volume(path, kind="label")
    data64 = synthetic_labels().astype(np.float64)
    data64[0, 0, 0] = 2.0000000000000004
    with pytest.raises(InvalidVolumeError, match=r"e\.g\. 2\.0000000000000004, nearest integer 2"):
        read_volume(write_nifti(tmp_path / "f64.nii.gz", data64), kind="label")


def test_truncated_nifti_is_corrupt(ct_nifti: Path) -> None:
    data = ct_nifti.read_bytes()
    ct_nifti.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptFileError, match=r"ct_0000\.nii\.gz: cannot read") as info:
        read_volume(ct_nifti)
    assert "truncated" in str(info.value) or "NIfTI" in str(info.value)


@pytest.mark.parametrize(
    "payload", [b"this is not a nifti file" * 40, gzip.compress(b"\x00" * 100, mtime=0)], ids=["text", "gzip-of-zeros"]
)  # fixed ids and mtime: xdist workers must collect alike
def test_garbage_bytes_are_corrupt(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(payload)
    with pytest.raises(CorruptFileError, match=r"junk\.nii\.gz: cannot read"):
        read_volume(path)


def test_2d_volume_is_refused(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "flat.nii.gz", synthetic_ct()[:, :, 0])
    with pytest.raises(InvalidVolumeError, match=r"flat\.nii\.gz: is 2D \(24x20\); expected one 3D volume"):
        read_volume(path)


def test_4d_volume_is_refused_but_singleton_4th_dim_is_squeezed(tmp_path: Path) -> None:
    ct = synthetic_ct()
    path = write_nifti(tmp_path / "t.nii.gz", np.stack([ct, ct], axis=-1))
    with pytest.raises(InvalidVolumeError, match=r"t\.nii\.gz: is 4D \(24x20x8x2\)"):
        read_volume(path)
    assert read_volume(write_nifti(tmp_path / "s.nii.gz", ct[..., None])).array.shape == (8, 20, 24)


@pytest.mark.parametrize("bad, word", [(np.nan, "3 NaN and 0 Inf"), (np.inf, "0 NaN and 3 Inf")])
def test_non_finite_voxels_are_refused(tmp_path: Path, bad: float, word: str) -> None:
    data = synthetic_ct().astype(np.float32)
    data[0, 0, :3] = bad
    path = write_nifti(tmp_path / "nf.nii.gz", data)
    with pytest.raises(InvalidVolumeError, match=rf"nf\.nii\.gz: has {word} voxels"):
        read_volume(path)


def test_uint8_with_scl_slope_and_inter_is_ct(tmp_path: Path) -> None:
    """uint8 voxels stored as (HU + 1024) / 8: nibabel moves the scaling into the data proxy on load."""
    hu = synthetic_ct()
    stored = np.clip(np.round((hu + 1024) / 8), 0, 255).astype(np.uint8)
    path = write_nifti(tmp_path / "u8.nii.gz", stored, slope_inter=(8.0, -1024.0))
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.to_original(vol.array), stored * np.float32(8) - 1024)
    assert vol.header.get_data_dtype() == np.uint8 and vol.header.get_slope_inter() == (8.0, -1024.0)
    # written back unscaled, with the reference's geometry
    out = nib.load(write_volume_like(vol.array, vol, tmp_path / "back.nii.gz"))
    assert out.dataobj.slope == 1.0 and out.dataobj.inter == 0.0
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), vol.to_original(vol.array))


def test_uint8_with_identity_scaling_is_still_8_bit(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "id.nii.gz", np.full((24, 20, 8), 128, np.uint8), slope_inter=(1.0, 0.0))
    with pytest.raises(InvalidVolumeError, match=r"it is an 8-bit image \(uint8 voxels"):
        read_volume(path)


def _qform_sform_file(path: Path, qform: np.ndarray, sform: np.ndarray) -> Path:
    img = nib.Nifti1Image(synthetic_ct(), None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=2)
    nib.save(img, path)
    return path


def test_qform_sform_left_right_disagreement_warns_and_uses_the_sform(tmp_path: Path) -> None:
    sform = np.diag([0.7, 0.8, 2.5, 1.0])
    qform = np.diag([-0.7, 0.8, 2.5, 1.0])  # x flipped: left and right swapped
    path = _qform_sform_file(tmp_path / "lr.nii.gz", qform, sform)
    with pytest.warns(GeometryWarning) as record:
        vol = read_volume(path)
    message = str(record[0].message)
    assert message.startswith(f"{path}: qform (code 1) and sform (code 2) disagree by up to 32.2 mm")
    assert "sform RAS, qform LAS" in message and "LEFT AND RIGHT ARE SWAPPED" in message
    assert "using the sform" in message
    np.testing.assert_allclose(vol.affine, sform, atol=1e-6)


def test_qform_sform_shift_warns_without_axis_claim(tmp_path: Path) -> None:
    sform = np.diag([0.7, 0.8, 2.5, 1.0])
    qform = sform.copy()
    qform[1, 3] = 3.0
    with pytest.warns(GeometryWarning, match=r"disagree by up to 3 mm; using the sform") as record:
        read_volume(_qform_sform_file(tmp_path / "shift.nii.gz", qform, sform))
    assert "SWAPPED" not in str(record[0].message)


def test_agreeing_or_unset_qform_does_not_warn(tmp_path: Path) -> None:
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    almost = affine.copy()
    almost[0, 3] = 0.05  # within QFORM_SFORM_TOLERANCE_MM
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        read_volume(_qform_sform_file(tmp_path / "same.nii.gz", almost, affine))
        read_volume(write_nifti(tmp_path / "q0.nii.gz", synthetic_ct(), PERMUTED_AFFINE, qform_code=0))


def test_uint8_image_is_not_ct(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "png_like.nii.gz", np.full((24, 20, 8), 128, np.uint8))
    with pytest.raises(
        InvalidVolumeError,
        match=r"png_like\.nii\.gz: does not look like CT in Hounsfield units: "
        r"it is an 8-bit image \(uint8 voxels, values 128\.\.128\)",
    ):
        read_volume(path)


def test_values_in_0_255_are_not_ct(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (24, 20, 8)).astype(np.int16)
    with pytest.raises(InvalidVolumeError, match=r"8-bit image \(int16 voxels, values 0\.\.255\)"):
        read_volume(write_nifti(tmp_path / "eight.nii.gz", data))


def test_mr_like_image_is_not_ct(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 1500, (24, 20, 8)).astype(np.int16)
    path = write_nifti(tmp_path / "t1.nii.gz", data)
    with pytest.raises(
        InvalidVolumeError,
        match=r"t1\.nii\.gz: does not look like CT in Hounsfield units: "
        r"no negative values \(values 0\.\.1499\)",
    ):
        read_volume(path)
    assert read_volume(path, check_hu=False).array.max() == 1499


def test_image_without_air_is_not_ct(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(-200, 1500, (24, 20, 8)).astype(np.int16)
    with pytest.raises(InvalidVolumeError, match=r"no air \(values -200\.\.1499, 0\.5th percentile"):
        read_volume(write_nifti(tmp_path / "mr.nii.gz", data))


def test_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"nope\.nii\.gz: does not exist"):
        read_volume(tmp_path / "nope.nii.gz")
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(
        InputFileError,
        match=r"a\.png: is neither a volume file \(\.nii, \.nii\.gz, \.nrrd, "
        r"\.nhdr, \.mha, \.mhd\) nor a DICOM",
    ):
        read_volume(tmp_path / "a.png")


def test_check_pair_accepts_matching_label(ct_nifti: Path, label_nifti: Path) -> None:
    check_pair(read_volume(ct_nifti), read_volume(label_nifti, kind="label"))


def test_check_pair_shape_mismatch(ct_nifti: Path, tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "labels" / "X.nii.gz", synthetic_labels((24, 20, 7)), PERMUTED_AFFINE)
    with pytest.raises(
        LabelMismatchError, match=r"labels/X\.nii\.gz: is 24x20x7 but image ct_0000\.nii\.gz is 24x20x8"
    ):
        check_pair(read_volume(ct_nifti), read_volume(path, kind="label"))


def test_check_pair_affine_and_spacing_mismatch(ct_nifti: Path, tmp_path: Path) -> None:
    shifted = PERMUTED_AFFINE.copy()
    shifted[0, 3] += 0.5
    path = write_nifti(tmp_path / "shift.nii.gz", synthetic_labels(), shifted)
    with pytest.raises(
        LabelMismatchError, match=r"shift\.nii\.gz: affine differs from image ct_0000\.nii\.gz by up to 0\.5 mm"
    ):
        check_pair(read_volume(ct_nifti), read_volume(path, kind="label"))
    scaled = PERMUTED_AFFINE.copy()
    scaled[2, 2] = -3.0
    path = write_nifti(tmp_path / "sp.nii.gz", synthetic_labels(), scaled)
    with pytest.raises(LabelMismatchError, match=r"sp\.nii\.gz: spacing 3x0\.7x0\.8 mm differs from image"):
        check_pair(read_volume(ct_nifti), read_volume(path, kind="label"))


def test_check_label_ids_lists_unknown_ids(tmp_path: Path) -> None:
    labels = synthetic_labels()
    labels[0, 0, 0], labels[1, 0, 0] = 14, 57
    vol = read_volume(write_nifti(tmp_path / "amos.nii.gz", labels), kind="label")
    with pytest.raises(
        LabelMismatchError, match=r"amos\.nii\.gz: holds unknown label ids \[14, 57\] \(allowed: 0\.\.13\)"
    ):
        check_label_ids(vol)
    check_label_ids(vol, allowed=range(60))


def test_negative_label_ids_are_refused(tmp_path: Path) -> None:
    labels = synthetic_labels().astype(np.int16)
    labels[0, 0, 0] = -1
    with pytest.raises(InvalidVolumeError, match=r"neg\.nii\.gz: is not a label map: negative label ids"):
        read_volume(write_nifti(tmp_path / "neg.nii.gz", labels), kind="label")
