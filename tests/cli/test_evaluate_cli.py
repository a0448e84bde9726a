"""``smp-diffusion evaluate`` run in-process through ``cli.main.main``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from smp_diffusion_encoder.cli.main import main


def _save(path: Path, labels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, np.diag([0.8, 0.8, 2.5, 1.0])), path)


def _case(tmp_path: Path, name: str, shift: int = 1, pred_shape: tuple[int, int, int] = (16, 16, 8)) -> None:
    gt = np.zeros((16, 16, 8), np.uint8)
    gt[2:10, 3:11, 1:6] = 1
    gt[11:14, 3:6, 1:6] = 5
    pred = np.zeros(pred_shape, np.uint8)
    pred[2 + shift : 10 + shift, 3:11, 1:6] = 1
    _save(tmp_path / "gt" / name, gt)
    _save(tmp_path / "pred" / name, pred)


def test_evaluate_writes_csv_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _case(tmp_path, "A_0001.nii.gz")
    _case(tmp_path, "A_0002.nii.gz", shift=0)
    out, summary = tmp_path / "out" / "metrics.csv", tmp_path / "out" / "summary.md"
    code = main(
        [
            "evaluate",
            str(tmp_path / "pred"),
            str(tmp_path / "gt"),
            "--out",
            str(out),
            "--summary",
            str(summary),
            "--no-progress",
        ]
    )
    assert code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("Name,Liver_DSC,RK_DSC,") and lines[0].endswith(",Duodenum_NSD,LK_NSD")
    assert [line.split(",")[0] for line in lines[1:]] == ["A_0001.nii.gz", "A_0002.nii.gz"]
    printed = capsys.readouterr().out
    assert "| Liver |" in printed and "| **FLARE mean over 13 organs** |" in printed
    # the other mean: only the organs the ground truth holds (here liver and aorta, the aorta missed)
    assert "| **Mean over organs present in the ground truth** |" in printed
    assert summary.read_text() == printed
    assert "| Aorta | 0.0000 ± 0.0000 | 0.0000 ± 0.0000 | 0.00 |" in printed  # aorta missed in both cases
    # the volume ratio and where the true voxels went: the shifted liver keeps its size, half the aorta's
    # voxels sit where the shifted liver is
    assert "| Liver | 1.00 |" in printed and "| Aorta | 0.00 | background" in printed
    assert "Where each true organ's voxels were predicted" in printed


def test_evaluate_without_summary(tmp_path: Path) -> None:
    _case(tmp_path, "A_0001.nii.gz")
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-progress"]) == 0
    assert out.is_file() and len(out.read_text().splitlines()) == 2


def test_missing_prediction_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _case(tmp_path, "A_0001.nii.gz")
    _save(tmp_path / "gt" / "A_0002.nii.gz", np.zeros((16, 16, 8), np.uint8))
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-progress"]) == 2
    assert "A_0002.nii.gz" in capsys.readouterr().err
    assert not out.exists()


def test_shape_mismatch_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _case(tmp_path, "A_0001.nii.gz", pred_shape=(16, 16, 9))
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "LabelMismatchError" in err and "16x16x9" in err and "16x16x8" in err
    assert not out.exists()


def test_nrrd_and_mha_predictions_score_like_nifti(tmp_path: Path) -> None:
    """Predictions written as NRRD / MHA (SimpleITK, same voxel order) are matched with NIfTI ground truth by
    case name and give the NIfTI numbers."""
    import SimpleITK as sitk

    _case(tmp_path, "A_0001.nii.gz")
    _case(tmp_path, "A_0002.nii.gz", shift=0)
    ref = tmp_path / "ref.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(ref), "--no-progress"]) == 0
    for name, suffix in (("A_0001", ".nrrd"), ("A_0002", ".mha")):
        nifti = tmp_path / "pred" / f"{name}.nii.gz"
        sitk.WriteImage(sitk.ReadImage(str(nifti)), str(tmp_path / "pred" / f"{name}{suffix}"))
        nifti.unlink()
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-progress"]) == 0
    assert out.read_text() == ref.read_text()


def test_two_predictions_for_one_case_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _case(tmp_path, "A_0001.nii.gz")
    _save(tmp_path / "pred" / "A_0001.nii", np.zeros((16, 16, 8), np.uint8))
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred"),
                str(tmp_path / "gt"),
                "--out",
                str(tmp_path / "m.csv"),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "holds two label maps for case A_0001: A_0001.nii and A_0001.nii.gz" in capsys.readouterr().err


@pytest.mark.parametrize("bad_id", [255, 14])
@pytest.mark.parametrize("where", ["gt", "pred"])
def test_unknown_label_ids_are_refused_like_check_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad_id: int, where: str
) -> None:
    """They used to be scored as background with exit 0; check-data refuses the same file."""
    _case(tmp_path, "A_0001.nii.gz")
    bad = tmp_path / where / "A_0001.nii.gz"
    labels = np.asanyarray(nib.load(bad).dataobj).copy()
    labels[0, 0, :] = bad_id
    _save(bad, labels)
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"), "--out", str(out), "--no-progress"]) == 2
    message = f"{bad}: holds unknown label ids [{bad_id}] (allowed: 0..13)"
    assert f"error: LabelMismatchError: {message}" in capsys.readouterr().err
    assert not out.exists()
    from smp_diffusion_encoder.data.volume import check_label_ids, read_volume
    from smp_diffusion_encoder.errors import LabelMismatchError

    with pytest.raises(LabelMismatchError) as refused:  # check-data's check of a label map
        check_label_ids(read_volume(bad, kind="label"))
    assert str(refused.value).startswith(message)


def test_labels_convention_maps_the_ground_truth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _case(tmp_path, "A_0001.nii.gz", shift=0)
    gt = tmp_path / "gt" / "A_0001.nii.gz"
    labels = np.asanyarray(nib.load(gt).dataobj).copy()
    labels[labels == 1] = 6  # AMOS liver
    labels[labels == 5] = 8  # AMOS aorta
    labels[0, 0, :] = 255  # not in AMOS's table: background
    _save(gt, labels)
    out = tmp_path / "metrics.csv"
    assert (
        main(
            [
                "evaluate",
                str(tmp_path / "pred"),
                str(tmp_path / "gt"),
                "--out",
                str(out),
                "--no-progress",
                "--labels-convention",
                "amos",
            ]
        )
        == 0
    )
    header, row = out.read_text().splitlines()[:2]
    values = dict(zip(header.split(","), row.split(",")))
    assert float(values["Liver_DSC"]) == 1.0 and float(values["Aorta_DSC"]) == 0.0
