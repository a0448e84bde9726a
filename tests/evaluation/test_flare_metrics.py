"""FLARE 2022 rules on synthetic label maps, file handling, CSV/markdown writers and slice Dice."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from smp_diffusion_encoder.data.remap import FLARE_ORGANS
from smp_diffusion_encoder.errors import CorruptFileError, DatasetLayoutError, InvalidVolumeError, LabelMismatchError
from smp_diffusion_encoder.evaluation import (
    FLARE22_TOLERANCES_MM,
    METRIC_COLUMNS,
    CaseResult,
    case_metrics,
    evaluate_case,
    evaluate_folder,
    format_summary_markdown,
    load_label_map,
    slice_dice,
    summarize,
    write_metrics_csv,
    write_summary_markdown,
)

LIVER, AORTA, GALLBLADDER = 1, 5, 9
SPACING = (1.0, 1.0, 1.0)
OFFICIAL_HEADER = (
    "Name,Liver_DSC,RK_DSC,Spleen_DSC,Pancreas_DSC,Aorta_DSC,IVC_DSC,RAG_DSC,LAG_DSC,Gallbladder_DSC,"
    "Esophagus_DSC,Stomach_DSC,Duodenum_DSC,LK_DSC,Liver_NSD,RK_NSD,Spleen_NSD,Pancreas_NSD,Aorta_NSD,"
    "IVC_NSD,RAG_NSD,LAG_NSD,Gallbladder_NSD,Esophagus_NSD,Stomach_NSD,Duodenum_NSD,LK_NSD"
)


def _volume(shape: tuple[int, int, int] = (24, 20, 12)) -> np.ndarray:
    return np.zeros(shape, np.uint8)


def _save(path: Path, labels: np.ndarray, zooms: tuple[float, float, float] = (0.8, 0.8, 2.5)) -> Path:
    image = nib.Nifti1Image(labels, np.diag([*zooms, 1.0]))
    image.header.set_zooms(zooms)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, path)
    return path


def test_tolerances_are_official() -> None:
    assert tuple(FLARE22_TOLERANCES_MM) == FLARE_ORGANS
    assert list(FLARE22_TOLERANCES_MM.values()) == [5, 3, 3, 5, 2, 2, 2, 2, 2, 3, 5, 7, 3]


def test_identical_maps_and_absent_organs_score_one() -> None:
    gt = _volume()
    gt[2:10, 2:10, 2:8] = LIVER
    gt[12:16, 4:8, 1:9] = AORTA
    metrics = case_metrics(gt, gt.copy(), SPACING)
    assert set(metrics) == set(METRIC_COLUMNS[1:])
    assert all(v == 1.0 for v in metrics.values())  # present organs match, absent-in-both score 1


def test_absent_in_exactly_one_scores_zero() -> None:
    gt, pred = _volume(), _volume()
    gt[2:6, 2:6, 2:6] = GALLBLADDER  # missed by the prediction
    pred[10:14, 2:6, 2:6] = LIVER  # hallucinated
    m = case_metrics(gt, pred, SPACING)
    assert (m["Gallbladder_DSC"], m["Gallbladder_NSD"]) == (0.0, 0.0)
    assert (m["Liver_DSC"], m["Liver_NSD"]) == (0.0, 0.0)


def test_shifted_cube_dice_is_exact_and_nsd_within_tolerance() -> None:
    gt, pred = _volume(), _volume()
    gt[4:12, 4:12, 2:10] = LIVER
    pred[5:13, 4:12, 2:10] = LIVER  # 1 voxel = 2 mm along x; liver tolerance 5 mm
    m = case_metrics(gt, pred, (2.0, 1.0, 1.0))
    assert m["Liver_DSC"] == pytest.approx(7 / 8, abs=1e-15)
    assert m["Liver_NSD"] == 1.0


def test_z_range_restriction_drops_last_gt_slice() -> None:
    gt, pred = _volume(), _volume()
    gt[5:9, 5:9, 2:7] = AORTA  # slices 2..6: scored on [2, 6)
    pred[5:9, 5:9, 0:6] = AORTA  # misses slice 6 (dropped) and adds 0..1 (outside the range)
    gt[12:18, 10:16, 2:7] = LIVER  # the same error on an unrestricted organ counts
    pred[12:18, 10:16, 0:6] = LIVER
    m = case_metrics(gt, pred, SPACING)
    assert (m["Aorta_DSC"], m["Aorta_NSD"]) == (1.0, 1.0)
    assert m["Liver_DSC"] == pytest.approx(2 * 4 / (5 + 6))


def test_single_slice_restricted_organ_gives_nan_like_official() -> None:
    gt = _volume()
    gt[5:9, 5:9, 3] = AORTA  # range [3, 3) is empty
    m = case_metrics(gt, gt.copy(), SPACING)
    assert math.isnan(m["Aorta_DSC"]) and math.isnan(m["Aorta_NSD"])
    other = case_metrics(_volume(), _volume(), SPACING)
    summary = summarize([CaseResult("a.nii.gz", m), CaseResult("b.nii.gz", other)])
    assert summary["Aorta"][0] == 1.0  # nan skipped


@pytest.mark.parametrize(("pred_start", "expected_dsc", "nsd_zero"), [(9, 0.1, True), (8, 0.2, False), (10, 0.0, True)])
def test_nsd_is_zero_below_dsc_02(pred_start: int, expected_dsc: float, nsd_zero: bool) -> None:
    gt, pred = _volume(), _volume()
    gt[0:10, 4:12, 2:10] = LIVER
    pred[pred_start : pred_start + 10, 4:12, 2:10] = LIVER  # overlap 10 - pred_start slabs
    m = case_metrics(gt, pred, SPACING)
    assert m["Liver_DSC"] == pytest.approx(expected_dsc)
    if nsd_zero:
        assert m["Liver_NSD"] == 0.0  # surfaces are within 5 mm in places, yet NSD is 0
    else:
        assert 0.0 < m["Liver_NSD"] < 1.0


def test_case_metrics_rejects_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="equal shape"):
        case_metrics(_volume(), _volume((24, 20, 11)), SPACING)


def _pair(tmp_path: Path, name: str = "CASE_0001.nii.gz") -> tuple[Path, Path, np.ndarray, np.ndarray]:
    gt, pred = _volume(), _volume()
    gt[2:10, 2:10, 2:8] = LIVER
    pred[3:10, 2:10, 2:8] = LIVER
    return _save(tmp_path / "pred" / name, pred), _save(tmp_path / "gt" / name, gt), gt, pred


def test_evaluate_folder_uses_gt_spacing_and_names(tmp_path: Path) -> None:
    pred_path, gt_path, gt, pred = _pair(tmp_path)
    _save(tmp_path / "pred" / "EXTRA_0002.nii.gz", pred)  # no ground truth: ignored
    results = evaluate_folder(tmp_path / "pred", tmp_path / "gt", progress=False)
    assert [r.name for r in results] == ["CASE_0001.nii.gz"]
    assert results[0].metrics == case_metrics(gt, pred, (0.8, 0.8, 2.5))
    labels, spacing = load_label_map(gt_path)
    assert labels.dtype == np.uint8 and spacing == pytest.approx((0.8, 0.8, 2.5))


def test_missing_prediction_is_named(tmp_path: Path) -> None:
    _pair(tmp_path)
    _save(tmp_path / "gt" / "CASE_0002.nii.gz", _volume())
    with pytest.raises(DatasetLayoutError, match="CASE_0002.nii.gz"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt", progress=False)


def test_empty_or_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(DatasetLayoutError, match="no ground-truth"):
        evaluate_folder(tmp_path / "pred", tmp_path / "gt", progress=False)
    with pytest.raises(DatasetLayoutError, match="not a folder"):
        evaluate_folder(tmp_path / "nope", tmp_path / "gt", progress=False)


def test_shape_mismatch_names_both_files(tmp_path: Path) -> None:
    pred_path = _save(tmp_path / "pred" / "C.nii.gz", _volume((24, 20, 11)))
    gt_path = _save(tmp_path / "gt" / "C.nii.gz", _volume())
    with pytest.raises(LabelMismatchError) as info:
        evaluate_case(pred_path, gt_path)
    message = str(info.value)
    assert str(pred_path) in message and str(gt_path) in message
    assert "24x20x11" in message and "24x20x12" in message


def test_corrupt_and_invalid_files(tmp_path: Path) -> None:
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(CorruptFileError, match="broken.nii.gz"):
        load_label_map(broken)
    fractional = _save(tmp_path / "frac.nii.gz", np.full((4, 4, 4), 1.5, np.float32))
    with pytest.raises(InvalidVolumeError, match="frac.nii.gz"):
        load_label_map(fractional)


def test_csv_header_and_rounding(tmp_path: Path) -> None:
    metrics = {c: 1.0 for c in METRIC_COLUMNS[1:]}
    metrics["Liver_DSC"] = 0.123456
    metrics["Spleen_NSD"] = 0.99995
    out = tmp_path / "m.csv"
    write_metrics_csv([CaseResult("AMOS_0013.nii.gz", metrics)], out)
    header, row = out.read_text().splitlines()
    assert header == OFFICIAL_HEADER
    values = dict(zip(header.split(","), row.split(","), strict=True))
    assert values["Name"] == "AMOS_0013.nii.gz"
    assert values["Liver_DSC"] == "0.1235" and values["LK_NSD"] == "1.0"
    assert float(values["Spleen_NSD"]) == pytest.approx(1.0)
    assert not list(tmp_path.glob(".m.csv.tmp-*"))  # atomic: no temporary left


def test_summary_markdown(tmp_path: Path) -> None:
    a = {c: 1.0 for c in METRIC_COLUMNS[1:]}
    b = {**a, "Liver_DSC": 0.5, "Liver_NSD": 0.0}
    results = [CaseResult("a.nii.gz", a), CaseResult("b.nii.gz", b)]
    stats = summarize(results)
    assert stats["Liver"] == pytest.approx((0.75, 0.25, 0.5, 0.5))
    assert stats["FLARE mean over 13 organs"][0] == pytest.approx((0.75 + 12) / 13)
    assert "Mean over organs present in the ground truth" not in stats  # no confusion counts: presence unknown
    out = tmp_path / "s.md"
    write_summary_markdown(results, out)
    text = out.read_text()
    assert text == format_summary_markdown(results)
    assert "| Liver | 0.7500 ± 0.2500 | 0.5000 ± 0.5000 |" in text
    assert text.count("\n| ") == len(FLARE_ORGANS) + 3  # header + separator + organs + mean
    assert "| **FLARE mean over 13 organs** | 0.9808 ± 0.0192 | 0.9615 ± 0.0385 |" in text  # of per-case means


def test_slice_dice() -> None:
    gt = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[0, 1, 0], [2, 2, 2]])
    scores = slice_dice(gt, pred, num_classes=4)
    np.testing.assert_allclose(scores, [2 * 1 / 4, 2 * 1 / 3, 2 * 2 / 5, 1.0])  # class 3 absent in both -> 1
    assert slice_dice(np.zeros((2, 2), int), np.ones((2, 2), int), 2).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="labels must lie"):
        slice_dice(gt, pred, num_classes=2)
