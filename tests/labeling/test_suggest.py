"""``smp-diffusion suggest`` end to end on the CT phantom with a tiny model: outputs, invariants, inputs, errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.labeled_slices import slice_positions_mm, write_sidecar
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.volume import read_volume
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.inference import load_model
from smp_diffusion_encoder.labeling import SuggestConfig, find_scans, labeled_slices, measure_slices, suggest
from smp_diffusion_encoder.labeling.suggest import COLUMNS

SHAPE = (16, 64, 64)  # 15 mm slices


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A trained tiny model (DIR/model + DIR/split.json) and scans: a case folder with 3 labeled slices (sidecar),
    and an unlabeled volume file."""
    base = tmp_path_factory.mktemp("suggest")
    root = write_phantom_dataset(base / "phantom", n_labeled=2, n_unlabeled=0, shape=SHAPE)
    train, other = FlareDataset.discover(root).labeled
    run = base / "run"
    finetune(
        [train],
        FinetuneConfig(
            method="unet",
            encoder="ddpm-ct-tiny",
            encoder_weights=None,
            budget="3",
            steps=2,
            batch_size=2,
            augment_views=2,
        ),
        out_dir=run,
        progress=False,
    )
    scans = base / "scans"
    case = scans / "CASE_0001"
    case.mkdir(parents=True)
    shutil.copyfile(other.image, case / "image.nii.gz")
    label = read_volume(other.label, kind="label")
    keep = np.zeros_like(label.array)
    keep[[4, 8, 12]] = label.array[[4, 8, 12]]
    import nibabel as nib

    img = nib.load(other.label)
    nib.save(nib.Nifti1Image(label.to_original(keep), img.affine, img.header), case / "label.nii.gz")
    write_sidecar(case / "label.slices.json", [4, 8, 12])
    shutil.copyfile(train.image, scans / "LOOSE_0001_0000.nii.gz")  # an unlabeled scan file
    return {"model": run / "model", "run": run, "scans": scans, "case": case, "train_image": train.image}


def _suggest(data: dict[str, Path], out: Path, *extra: str) -> list[dict[str, str]]:
    assert (
        main(
            [
                "suggest",
                str(data["scans"]),
                "--model",
                str(data["model"]),
                "--out",
                str(out),
                "--n",
                "6",
                "--min-distance-mm",
                "20",
                "--device",
                "cpu",
                "--no-progress",
                *extra,
            ]
        )
        == 0
    )
    with open(out / "suggestions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_suggest_writes_ranked_files_and_honours_the_rules(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = _suggest(data, tmp_path / "a")
    printed = capsys.readouterr().out
    assert "unlabeled slices of 2 scans scored (3 labeled slices avoided)" in printed
    assert rows and list(rows[0]) == list(COLUMNS)
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["scan"] for r in rows} == {"CASE_0001", "LOOSE_0001"}  # spread over both scans
    for r in rows:
        if r["scan"] == "CASE_0001":
            assert int(r["z"]) not in (4, 8, 12) and all(abs(int(r["z"]) - z) * 15.0 >= 20 for z in (4, 8, 12))
        assert r["why"] and float(r["score"]) >= 0
    for scan in ("CASE_0001", "LOOSE_0001"):
        mine = sorted(float(r["position_mm"]) for r in rows if r["scan"] == scan)
        assert all(b - a >= 20 for a, b in zip(mine, mine[1:]))
    result = json.loads((tmp_path / "a" / "suggestions.json").read_text())
    assert result["labeled"]["CASE_0001"] == [4, 8, 12] and result["settings"]["n"] == 6
    assert (tmp_path / "a" / "contact_sheet.png").read_bytes()[:4] == b"\x89PNG"
    sidecar = json.loads((tmp_path / "a" / "sidecars" / "CASE_0001.slices.json").read_text())
    assert sidecar["z"] == sorted({4, 8, 12} | {int(r["z"]) for r in rows if r["scan"] == "CASE_0001"})
    image = read_volume(data["case"] / "image.nii.gz")
    first = next(r for r in rows if r["scan"] == "CASE_0001")
    assert float(first["position_mm"]) == pytest.approx(slice_positions_mm(image)[int(first["z"])], abs=0.01)


@pytest.mark.parametrize("measure", ["error", "tta", "dice"])
def test_suggest_is_deterministic_for_a_seed(data: dict[str, Path], tmp_path: Path, measure: str) -> None:
    a = _suggest(data, tmp_path / "a", "--measure", measure, "--sheet-slices", "0")
    b = _suggest(data, tmp_path / "b", "--measure", measure, "--sheet-slices", "0")
    assert a == b


def test_the_runs_split_and_given_files_count_as_labeled(data: dict[str, Path], tmp_path: Path) -> None:
    scans = find_scans([data["train_image"]])  # the training scan itself: its run's split lists 3 slices
    (train_id,) = [s.scan_id for s in scans]
    model = load_model(data["model"])
    images = {train_id: read_volume(data["train_image"])}
    labeled = labeled_slices(scans, images, [data["run"] / "split.json"])
    trained = json.loads((data["run"] / "split.json").read_text())["train"]
    assert labeled[train_id] == {z for _, z in trained}
    result = suggest(
        model, scans, SuggestConfig(n=16, min_distance_mm=0.0, device="cpu"), labeled=labeled, images=images
    )
    assert {s.z for s in result.suggestions}.isdisjoint(labeled[train_id])
    assert len(result.suggestions) == SHAPE[0] - len(labeled[train_id])
    assert result.candidates == SHAPE[0] - len(labeled[train_id])


def test_candidates_restrict_the_choice(data: dict[str, Path]) -> None:
    scans = find_scans([data["case"]])
    result = suggest(
        load_model(data["model"]),
        scans,
        SuggestConfig(n=5, min_distance_mm=0.0, device="cpu"),
        labeled={"CASE_0001": [4]},
        candidates={"CASE_0001": [1, 2, 3, 4, 5]},
    )
    assert sorted(s.z for s in result.suggestions) == [1, 2, 3, 5]
    with pytest.raises(ConfigError, match="outside its 16 slices"):
        suggest(load_model(data["model"]), scans, SuggestConfig(device="cpu"), labeled={"CASE_0001": [16]})


def test_measures_are_cm2_of_the_model_slice(data: dict[str, Path]) -> None:
    model = load_model(data["model"])
    image = read_volume(data["case"] / "image.nii.gz")
    for measure in ("error", "entropy", "tta", "dice"):
        u = measure_slices(model, image, [0, 5, 9], measure, device="cpu")
        assert u.scores.shape == (3,) and (u.scores >= 0).all()
        per_pixel = u.maps.reshape(3, -1).sum(1)
        if measure == "dice":  # a Dice loss: each pixel's part of it
            assert (u.scores <= 1).all()
            assert u.scores == pytest.approx(per_pixel, rel=1e-5)
        else:
            assert u.scores == pytest.approx(per_pixel * u.pixel_area_cm2, rel=1e-5)
        assert u.pixel_area_cm2 == pytest.approx((model.preprocessing.spacing_mm / 10) ** 2)
        assert np.allclose(u.organ_share.sum(1)[u.scores > 0], 1.0)


def _slices(*organs: tuple[int, float, slice]) -> np.ndarray:
    """A ``(1, 4, 8, 8)`` softmax: background 1 everywhere, then each ``(class, p, rows)`` sets ``p`` there."""
    prob = np.zeros((1, 4, 8, 8), np.float32)
    prob[0, 0] = 1.0
    for c, p, rows in organs:
        prob[0, c, rows] = p
        prob[0, 0, rows] = 1.0 - p
    return prob


def test_dice_measure_is_the_expected_dice_loss_over_the_organs_on_the_slice() -> None:
    from smp_diffusion_encoder.labeling.uncertainty import from_probabilities

    def dice(prob: np.ndarray) -> tuple[float, np.ndarray]:
        u = from_probabilities(np.zeros((1, 8, 8), np.float32), prob, "dice", 0.09)
        assert u.scores[0] == pytest.approx(u.maps[0].sum(), abs=1e-6)
        return float(u.scores[0]), u.organ_share[0]

    assert dice(_slices()) == (0.0, pytest.approx([0, 0, 0, 0]))  # no organ: nothing to learn about organs
    assert dice(_slices((1, 1.0, slice(0, 4))))[0] == pytest.approx(0.0)  # sure and consistent
    # organ 1: p = 0.6 on 16 pixels, all predicted: 1 - 2 * 9.6 / (9.6 + 16) = 0.25; organ 2: p = 0.3 on 8 pixels
    # (2.4 pixels of mass, none predicted): loss 1; organ 3 has no mass: not counted. Mean (0.25 + 1) / 2.
    score, share = dice(_slices((1, 0.6, slice(0, 2)), (2, 0.3, slice(4, 5))))
    assert score == pytest.approx(0.625)
    assert share == pytest.approx([0, 0.2, 0.8, 0])
    # Less than one pixel of mass and never predicted: the organ is not on the slice.
    assert dice(_slices((1, 1.0, slice(0, 2)), (2, 0.1, slice(4, 5))))[0] == pytest.approx(0.0, abs=1e-6)


def test_dice_weighs_a_small_unsure_organ_like_a_large_unsure_area() -> None:
    """What the measure is for: the area measures rank a slice by how much tissue is unsure, so a large organ's
    unsure border outranks a small organ the model hardly sees; a slice's DSC (and this measure) weighs them alike."""
    from smp_diffusion_encoder.labeling.uncertainty import from_probabilities

    border = _slices((1, 1.0, slice(0, 6)))  # a large organ, sure inside ...
    border[0, 1, 5], border[0, 0, 5] = 0.7, 0.3  # ... unsure on an 8-pixel border row
    small = _slices((1, 1.0, slice(0, 6)), (2, 0.45, slice(7, 8)))  # the large organ sure; a small one
    small[0, 2, 7, 3:] = 0.0  # ... unsure (p 0.45) on 3 pixels: 1.35 pixels of mass, none predicted
    small[0, 0, 7, 3:] = 1.0
    both = np.concatenate([border, small])
    images = np.zeros((2, 8, 8), np.float32)
    error = from_probabilities(images, both, "error", 0.09).scores
    dice = from_probabilities(images, both, "dice", 0.09).scores
    assert error[0] > error[1]  # 2.4 vs 1.35 pixels of expected error
    assert dice == pytest.approx([1 - 2 * 45.6 / 93.6, (0 + 1) / 2])


def test_bad_labeled_inputs_name_the_file(
    data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stray = tmp_path / "NOBODY.slices.json"
    write_sidecar(stray, [1])
    assert (
        main(
            [
                "suggest",
                str(data["scans"]),
                "--model",
                str(data["model"]),
                "--out",
                str(tmp_path / "o"),
                "--labeled",
                str(stray),
                "--no-progress",
            ]
        )
        == 2
    )
    assert "NOBODY.slices.json: belongs to no scan given" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
