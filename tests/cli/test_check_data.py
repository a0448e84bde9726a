"""``smp-diffusion check-data`` run in-process: summaries, and exit status 2 with the message."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from tests.data.synthetic_volumes import (
    PERMUTED_AFFINE,
    synthetic_ct,
    synthetic_labels,
    write_dicom_series,
    write_nifti,
)

from smp_diffusion_encoder.cli.main import main  # noqa: E402


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
