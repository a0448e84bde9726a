"""``smp-diffusion check-data`` run in-process: summaries, and exit status 2 with the message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from smp_diffusion_encoder.cli.main import main
from tests.data.synthetic_volumes import (
    PERMUTED_AFFINE,
    synthetic_ct,
    synthetic_labels,
    write_dicom_series,
    write_nifti,
)


def make_root(root: Path, labels: np.ndarray | None = None) -> Path:
    lab = root / "Training/FLARE22_LabeledCase50"
    write_nifti(lab / "images/C_0001_0000.nii.gz", synthetic_ct(), PERMUTED_AFFINE)
    write_nifti(lab / "labels/C_0001.nii.gz", synthetic_labels() if labels is None else labels, PERMUTED_AFFINE)
    write_nifti(root / "Training/FLARE22_UnlabeledCase1-1000/U_0001_0000.nii.gz", synthetic_ct(seed=1))
    return root


def test_good_root_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check-data", str(make_root(tmp_path))]) == 0
    out = capsys.readouterr().out
    assert "C_0001" in out and "20x24x8" in out and "organs (3): Liver, RK, LK" in out
    assert "2 cases (1 labeled), 0 problems" in out


def test_single_nifti_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_nifti(tmp_path / "one.nii.gz", synthetic_ct())
    assert main(["check-data", str(path)]) == 0
    assert "HU -10" in capsys.readouterr().out


def test_unknown_label_ids_stop_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels = synthetic_labels()
    labels[0, 0, 0] = 42
    assert main(["check-data", str(make_root(tmp_path, labels))]) == 2
    err = capsys.readouterr().err
    assert "error: LabelMismatchError" in err and "C_0001.nii.gz: holds unknown label ids [42]" in err


def test_other_convention_is_remapped(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    labels = synthetic_labels()
    labels[labels == 13] = 52  # TotalSegmentator aorta
    assert main(["check-data", str(make_root(tmp_path, labels)), "--labels-convention", "totalsegmentator"]) == 0
    assert "Aorta" in capsys.readouterr().out


def test_keep_going_lists_all_problems(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = make_root(tmp_path, synthetic_labels((24, 20, 7)))
    bad = root / "Training/FLARE22_UnlabeledCase1-1000/U_0001_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    assert main(["check-data", str(root), "--keep-going"]) == 2
    captured = capsys.readouterr()
    assert "2 problems:" in captured.err
    assert "LabelMismatchError" in captured.err and "is 24x20x7 but image C_0001_0000.nii.gz is 24x20x8" in captured.err
    assert "CorruptFileError" in captured.err and "U_0001_0000.nii.gz: cannot read" in captured.err


def test_missing_path_and_bad_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["check-data", str(tmp_path / "nope.nii.gz")]) == 2
    assert "nope.nii.gz: does not exist" in capsys.readouterr().err
    (tmp_path / "Training").mkdir()
    assert main(["check-data", str(tmp_path)]) == 2
    assert "is not a FLARE 2022 root" in capsys.readouterr().err


def test_dicom_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = write_dicom_series(tmp_path / "series", synthetic_ct((12, 10, 4)))
    assert main(["check-data", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "series" in out and "10x12x4" in out and "0.7x0.8x2.5 mm" in out


def test_variable_spacing_and_tilt_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The issue's series (1.25 mm then 2.5 mm gaps) is a problem, a gantry tilt a warning, NRRD a case."""
    import SimpleITK as sitk

    ct = synthetic_ct((12, 10, 12)).astype(np.float64)
    z = [1.25 * k for k in range(6)] + [8.75 + 2.5 * k for k in range(6)]
    write_dicom_series(tmp_path / "a_variable", ct, slice_positions=z)
    theta = np.radians(18.5)
    write_dicom_series(
        tmp_path / "b_tilted", ct, orientation=(1, 0, 0, 0, np.cos(theta), -np.sin(theta)), slice_direction=(0, 0, 1)
    )
    nifti = write_nifti(tmp_path / "c.nii.gz", synthetic_ct())
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / "c.nrrd"))
    nifti.unlink()
    assert main(["check-data", str(tmp_path / "a_variable")]) == 2
    assert "error: DicomSeriesError: " in capsys.readouterr().err
    assert main(["check-data", str(tmp_path), "--keep-going"]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("a_variable") and "PROBLEM DicomSeriesError" in lines[0]
    assert "variable slice spacing" in lines[0] and "would sit 3.41 mm from where it was acquired" in lines[0]
    assert lines[1].startswith("b_tilted") and "10x23x12" in lines[1]  # 11 rows added for the tilt
    assert lines[2].startswith("b_tilted") and "WARNING" in lines[2] and "gantry tilt of 18.5 degrees" in lines[2]
    assert lines[3].startswith("c.nrrd") and "24x20x8" in lines[3]
    assert lines[-1] == "3 cases (0 labeled), 1 problems, 1 warnings"
    assert "variable slice spacing" in captured.err
