"""`smp-diffusion predict` with CT as it comes: --output-format nrrd/mha/dicom-seg, tilted and irregular DICOM
series, and output permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.dicom import series_geometry
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.encoder import FeatureConfig
from smp_diffusion_encoder.errors import GeometryWarning
from smp_diffusion_encoder.inference import ProbeModel, save_probe
from tests.data.synthetic_volumes import synthetic_ct, write_dicom_series, write_nifti

PREP = PreprocessingConfig(image_size=64, spacing_mm=0.5)  # the ~18 mm synthetic slices fill the 32 mm field


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = ProbeModel.build("tiny", FeatureConfig(timesteps=(50,)), num_classes=14)
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh U-Net predicts one class everywhere; make the labels vary (2 organs here)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return save_probe(model, tmp_path_factory.mktemp("probe"), PREP)


def predict(*args: str) -> int:
    return main(["predict", *args, "--no-progress"])


@pytest.fixture(scope="module")
def dicom_case(tmp_path_factory, probe_dir) -> tuple[Path, Path]:
    """A DICOM series and the NIfTI prediction of it (the reference for the other formats)."""
    root = tmp_path_factory.mktemp("dicom")
    series = write_dicom_series(root / "series_A", synthetic_ct((24, 20, 5)).astype(np.float64))
    assert predict(str(series), "--model", str(probe_dir), "--out", str(root / "nifti")) == 0
    return series, root / "nifti" / "series_A.nii.gz"


def test_dicom_seg_output_matches_the_nifti_prediction_slice_by_slice(dicom_case, probe_dir, tmp_path, capsys):
    series, nifti = dicom_case
    labels = read_volume(nifti, kind="label").array
    assert len(np.unique(labels)) > 1
    out = tmp_path / "seg"
    assert predict(str(series), "--model", str(probe_dir), "--out", str(out), "--output-format", "dicom-seg") == 0
    assert [p.name for p in out.iterdir()] == ["series_A_seg.dcm"]
    assert str(out / "series_A_seg.dcm") in capsys.readouterr().out
    seg = pydicom.dcmread(out / "series_A_seg.dcm")
    frames, _ = series_geometry(series)
    slice_of = {f.sop_instance_uid: k for k, f in enumerate(frames)}
    flare_of = {int(s.SegmentNumber): int(s.SegmentDescription.split()[-1]) for s in seg.SegmentSequence}
    assert sorted(flare_of.values()) == [int(v) for v in np.unique(labels) if v]
    rebuilt = np.zeros_like(labels)
    pixels = seg.pixel_array.reshape(int(seg.NumberOfFrames), seg.Rows, seg.Columns)
    for n, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        k = slice_of[item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose(item.PlanePositionSequence[0].ImagePositionPatient, frames[k].position, atol=1e-4)
        rebuilt[k][pixels[n] > 0] = flare_of[int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)]
    np.testing.assert_array_equal(rebuilt, labels)  # axial LPS series: canonical slice k is DICOM slice k


def test_dicom_seg_needs_dicom_inputs(probe_dir, tmp_path, capsys):
    src = write_nifti(tmp_path / "in" / "ct_0000.nii.gz", synthetic_ct())
    out = tmp_path / "out"
    assert predict(str(src), "--model", str(probe_dir), "--out", str(out), "--output-format", "dicom-seg") == 2
    err = capsys.readouterr().err
    assert "error: ConfigError: --output-format dicom-seg needs DICOM series folders as inputs" in err
    assert "ct_0000.nii.gz" in err and not out.exists()


@pytest.mark.parametrize("fmt", ["nrrd", "mha"])
def test_nrrd_and_mha_outputs_have_the_input_grid(dicom_case, probe_dir, tmp_path, fmt):
    series, nifti = dicom_case
    out = tmp_path / fmt
    assert (
        predict(
            str(series), "--model", str(probe_dir), "--out", str(out), "--output-format", fmt, "--save-probabilities"
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [f"series_A.{fmt}", f"series_A_probabilities.{fmt}"]
    pred, ref, src = (
        read_volume(out / f"series_A.{fmt}", kind="label"),
        read_volume(nifti, kind="label"),
        read_volume(series),
    )
    np.testing.assert_array_equal(pred.array, ref.array)
    np.testing.assert_allclose(pred.canonical_affine, src.canonical_affine, atol=1e-5)


def test_nrrd_input_predicts_like_its_nifti(probe_dir, tmp_path):
    import SimpleITK as sitk

    src = write_nifti(tmp_path / "in" / "ct_0000.nii.gz", synthetic_ct())
    (tmp_path / "nrrd_in").mkdir()
    sitk.WriteImage(sitk.ReadImage(str(src)), str(tmp_path / "nrrd_in" / "ct_0000.nrrd"))
    assert predict(str(src), "--model", str(probe_dir), "--out", str(tmp_path / "a")) == 0
    assert predict(str(tmp_path / "nrrd_in"), "--model", str(probe_dir), "--out", str(tmp_path / "b")) == 0
    a, b = read_volume(tmp_path / "a/ct.nii.gz", kind="label"), read_volume(tmp_path / "b/ct.nii.gz", kind="label")
    np.testing.assert_array_equal(a.array, b.array)
    np.testing.assert_allclose(a.canonical_affine, b.canonical_affine, atol=1e-5)


def test_outputs_respect_the_umask(probe_dir, tmp_path):
    src = write_nifti(tmp_path / "in" / "ct_0000.nii.gz", synthetic_ct())
    old = os.umask(0o022)
    try:
        assert predict(str(src), "--model", str(probe_dir), "--out", str(tmp_path / "o"), "--save-uncertainty") == 0
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "o").iterdir()}
    assert modes == {"ct.nii.gz": 0o644, "ct_uncertainty.nii.gz": 0o644}


def test_tilted_series_is_predicted_on_the_corrected_grid_with_one_warning(probe_dir, tmp_path):
    theta = np.radians(15.0)
    series = write_dicom_series(
        tmp_path / "tilted",
        synthetic_ct((24, 20, 5)).astype(np.float64),
        orientation=(1.0, 0.0, 0.0, 0.0, float(np.cos(theta)), -float(np.sin(theta))),
        slice_direction=(0.0, 0.0, 1.0),
        slice_positions=[2.5 * k for k in range(5)],
    )
    with pytest.warns(GeometryWarning) as record:
        assert predict(str(series), "--model", str(probe_dir), "--out", str(tmp_path / "o")) == 0
    tilt = [str(w.message) for w in record if issubclass(w.category, GeometryWarning)]
    assert len(tilt) == 1 and tilt[0].startswith(f"{series}: gantry tilt of 15.0 degrees")
    img = nib.load(tmp_path / "o" / "tilted.nii.gz")
    assert img.header["qform_code"] == img.header["sform_code"] == 1
    np.testing.assert_allclose(img.header.get_qform(), img.header.get_sform(), atol=1e-4)
    assert img.shape[1] > 24  # rows added for the shifted slices


def test_variable_spacing_series_exits_2_and_writes_nothing(probe_dir, tmp_path, capsys):
    z = [1.25 * k for k in range(3)] + [5.0 + 2.5 * k for k in range(3)]
    series = write_dicom_series(tmp_path / "var", synthetic_ct((24, 20, 6)).astype(np.float64), slice_positions=z)
    assert predict(str(series), "--model", str(probe_dir), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert f"error: DicomSeriesError: {series}: variable slice spacing" in err
    assert not (tmp_path / "o").exists()


def test_empty_prediction_gets_no_seg_but_a_warning(tmp_path):
    from smp_diffusion_encoder.inference.volume import VolumePrediction, _write_case

    vol = read_volume(write_dicom_series(tmp_path / "s", synthetic_ct((24, 20, 5)).astype(np.float64)))
    with pytest.warns(
        UserWarning,
        match=r"s: no organ was segmented; a DICOM SEG needs at least one segment, so "
        r"s_seg\.dcm was not written",
    ):
        assert (
            _write_case(VolumePrediction(np.zeros(vol.array.shape, np.uint8)), vol, tmp_path / "o", "s", "dicom-seg")
            == []
        )
    assert not (tmp_path / "o").exists()


def _deidentify(folder: Path) -> Path:
    for f in folder.iterdir():
        ds = pydicom.dcmread(f)
        for keyword in (
            "PatientName",
            "PatientBirthDate",
            "PatientSex",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyID",
            "ReferringPhysicianName",
            "SliceThickness",
        ):
            delattr(ds, keyword)
        ds.save_as(f, enforce_file_format=True)
    return folder


def test_dicom_seg_of_a_deidentified_series_and_keep_going(probe_dir, tmp_path, capsys, monkeypatch):
    study = tmp_path / "study"
    write_dicom_series(study / "good", synthetic_ct((24, 20, 5)).astype(np.float64))
    _deidentify(write_dicom_series(study / "anon", synthetic_ct((24, 20, 5), seed=1).astype(np.float64)))
    args = [str(study), "--model", str(probe_dir), "--output-format", "dicom-seg", "--keep-going"]
    assert predict(*args, "--out", str(tmp_path / "o")) == 0  # AttributeError: no PatientName, exit 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["anon_seg.dcm", "good_seg.dcm"]
    assert str(pydicom.dcmread(tmp_path / "o" / "anon_seg.dcm").PatientName) == ""

    import smp_diffusion_encoder.data.dicom_seg as dicom_seg

    original = dicom_seg._segmentation

    def old_highdicom(images, *rest):  # a source highdicom cannot take: the good series' SEG must stay
        if not images[0].get("PatientName"):
            raise AttributeError("'FileDataset' object has no attribute 'PatientName'")
        return original(images, *rest)

    monkeypatch.setattr(dicom_seg, "_segmentation", old_highdicom)
    assert predict(*args, "--out", str(tmp_path / "k")) == 2
    assert [p.name for p in (tmp_path / "k").iterdir()] == ["good_seg.dcm"]
    assert f"error: DicomSeriesError: {study / 'anon'}: cannot be referenced by a DICOM SEG" in capsys.readouterr().err


def test_seg_nrrd_and_rtstruct_outputs_match_the_nifti_prediction(dicom_case, probe_dir, tmp_path):
    from smp_diffusion_encoder.data.remap import FLARE_LABELS

    series, nifti = dicom_case
    labels = read_volume(nifti, kind="label").array
    out = tmp_path / "slicer"
    assert predict(str(series), "--model", str(probe_dir), "--out", str(out), "--output-format", "seg-nrrd") == 0
    assert [p.name for p in out.iterdir()] == ["series_A.seg.nrrd"]
    np.testing.assert_array_equal(read_volume(out / "series_A.seg.nrrd", kind="label").array, labels)
    pytest.importorskip("rt_utils")
    out = tmp_path / "rt"
    assert predict(str(series), "--model", str(probe_dir), "--out", str(out), "--output-format", "rtstruct") == 0
    rt = pydicom.dcmread(out / "series_A_rtstruct.dcm")
    names = [FLARE_LABELS[int(v)] for v in np.unique(labels) if v]
    assert [r.ROIName.lower() for r in rt.StructureSetROISequence] == names
