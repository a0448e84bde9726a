"""The few-shot protocol on the CT phantom: held-out data never trains, one training is scored on every held-out
set through the user's path, scoring is FLARE-exact, resume skips."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.data.flare import FlareDataset, find_labeled_cases
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import read_split_json
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation import evaluate_case
from smp_diffusion_encoder.inference import load_model, predict_files
from smp_diffusion_encoder.study import protocol
from smp_diffusion_encoder.study.config import StudyConfig
from smp_diffusion_encoder.study.protocol import (
    CROSS_PATIENT,
    HELD_OUT_CASES,
    WITHIN_VOLUME,
    Method,
    holdout,
    run_study,
    score,
    standard_methods,
)
from smp_diffusion_encoder.study.results import read_results_csv

TINY = dict(encoder="ddpm-ct-tiny", encoder_weights=None, steps=2, batch_size=2)
METHODS = [
    Method("probe", "tiny probe", {**TINY, "method": "probe"}),
    Method("unet", "tiny unet", {**TINY, "method": "unet"}),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=3, n_unlabeled=0, shape=(16, 64, 64))


@pytest.fixture(scope="module")
def other_scan(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The third phantom case as a case folder (image.nii.gz + label.nii.gz): 'another patient'."""
    case = FlareDataset.discover(root).labeled[2]
    folder = tmp_path_factory.mktemp("tests") / "OTHER_0001"
    folder.mkdir()
    shutil.copyfile(case.image, folder / "image.nii.gz")
    shutil.copyfile(case.label, folder / "label.nii.gz")
    return folder.parent


def test_one_training_is_scored_within_the_volume_and_on_another_scan(
    root: Path, other_scan: Path, tmp_path: Path
) -> None:
    case = FlareDataset.discover(root).labeled[0]
    tests = find_labeled_cases(other_scan)
    config = StudyConfig(budgets=("2",), seeds=(0, 1), block=3, gap=1, keep_models=True)
    plan = holdout([case], config, tests=tests)
    ((scored_case, scored),) = plan.evaluation
    assert scored_case == case and scored and plan.protocol == WITHIN_VOLUME and plan.tests == tuple(tests)
    calls = []
    real = protocol.finetune
    rows = run_study(plan, tmp_path, METHODS[:1], config, progress=False, log=calls.append)
    assert len(calls) == 2  # one training per (method, budget, seed) ...
    assert [(r["seed"], r["protocol"], r["case"]) for r in rows] == [  # ... scored twice
        (0, WITHIN_VOLUME, case.case_id),
        (0, CROSS_PATIENT, "OTHER_0001"),
        (1, WITHIN_VOLUME, case.case_id),
        (1, CROSS_PATIENT, "OTHER_0001"),
    ]
    assert all(r["n_train_slices"] == 2 and r["steps"] == 2 for r in rows)
    for seed in (0, 1):
        split = read_split_json(tmp_path / "runs" / "probe" / "2" / f"seed{seed}" / "split.json")
        used = [z for _, z in split.train + split.evaluation]
        assert used and all(abs(z - s) > 1 for z in used for s in scored)
    assert real is protocol.finetune and 0 <= rows[0]["mean_DSC"] <= 1


def test_whole_cases_are_scored_like_the_official_evaluator(root: Path, tmp_path: Path) -> None:
    config = StudyConfig(budgets=("4", "all"), seeds=(0,), test_cases=1, keep_models=True)
    plan = holdout(root, config)
    assert len(plan.train_cases) == 2 and len(plan.evaluation) == 1 and plan.protocol == HELD_OUT_CASES
    ((case, zs),) = plan.evaluation
    assert case not in plan.train_cases and zs == ()
    seen = []
    rows = run_study(
        plan,
        tmp_path,
        METHODS,
        config,
        progress=False,
        observe=lambda m, b, s, p, c, gt, pred, z: seen.append((m.name, b, p, gt.shape)),
    )
    assert [(r["method"], r["budget"]) for r in rows] == [
        ("probe", "4"),
        ("unet", "4"),
        ("probe", "all"),
        ("unet", "all"),
    ]
    assert seen[0] == ("probe", "4", HELD_OUT_CASES, (16, 64, 64))
    assert rows[2]["n_train_slices"] > 4
    model = load_model(tmp_path / "runs" / "unet" / "all" / "seed0" / "model")
    metrics, _, _, _ = score(model, case)
    report = predict_files([case.image], model, tmp_path / "pred", progress=False)
    official = evaluate_case(report.written[next(iter(report.written))][-1], case.label).metrics
    assert set(official) == set(metrics)
    assert all(np.isclose(official[k], metrics[k], equal_nan=True) for k in metrics)
    assert read_results_csv(tmp_path / "results.csv")[3]["mean_DSC"] == pytest.approx(rows[3]["mean_DSC"], abs=1e-4)


def test_study_resumes_and_drops_weights(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = StudyConfig(budgets=("4",), seeds=(0,), test_cases=2, holdout_seed=1)
    plan = holdout(root, config)
    run_study(plan, tmp_path, METHODS[:1], config, progress=False)
    run_dir = tmp_path / "runs" / "probe" / "4" / "seed0"
    assert (run_dir / "split.json").is_file() and (run_dir / "summary.json").is_file()
    assert not (run_dir / "model").exists() and not (run_dir / "checkpoint.pt").exists()
    calls = []
    real = protocol.finetune
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: calls.append(a[1].seed) or real(*a, **k))
    rows = run_study(
        plan,
        tmp_path,
        METHODS[:1],
        StudyConfig(budgets=("4",), seeds=(0, 1), test_cases=2, holdout_seed=1),
        progress=False,
    )
    assert calls == [1] and len(rows) == 4  # seed 0 was reused, 2 held-out cases per run


def test_standard_methods_and_bad_holdout(root: Path, other_scan: Path) -> None:
    methods = standard_methods("ddpm-ct", "ct", unfreeze_at=100)
    assert list(methods) == [
        "ddpm-probe",
        "ddpm-mlp",
        "ddpm-mlp-uniform",
        "ddpm-unet",
        "ddpm-unet-noaug",
        "ddpm-unet-nocontrast",
        "ddpm-unet-contrast",
        "ddpm-unet-ft",
        "random-unet",
        "random-probe",
        "resnet34-scratch",
    ]
    assert methods["ddpm-unet-noaug"].config("4", 0, StudyConfig()).augment == "none"
    assert methods["ddpm-unet"].config("4", 0, StudyConfig()).augment == "default"
    assert methods["ddpm-mlp-uniform"].config("4", 0, StudyConfig()).pixel_sampling == "uniform"
    assert methods["ddpm-mlp"].config("4", 0, StudyConfig()).pixel_sampling == "balanced"
    assert methods["ddpm-unet-ft"].options["unfreeze_at"] == 100
    assert methods["random-unet"].options["encoder_weights"] is None
    assert methods["resnet34-scratch"].config("4", 0, StudyConfig()).unfreeze_at == 0
    with pytest.raises(ConfigError, match="test_cases"):
        holdout(root, StudyConfig(test_cases=3))
    same = find_labeled_cases(root)[:1]
    with pytest.raises(ConfigError, match="also labeled training cases"):
        holdout(root, StudyConfig(test_cases=1), tests=same)


@pytest.mark.slow
def test_demo_command_writes_a_report(tmp_path: Path, other_scan: Path, root: Path, monkeypatch) -> None:
    from smp_diffusion_encoder.study import demo

    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    case = FlareDataset.discover(root).labeled[0]
    (data / "train" / "TRAIN_0001").mkdir()
    shutil.copyfile(case.image, data / "train" / "TRAIN_0001" / "image.nii.gz")
    shutil.copyfile(case.label, data / "train" / "TRAIN_0001" / "label.nii.gz")
    shutil.copytree(other_scan, data / "test")
    monkeypatch.setattr(demo, "DEMO_DATA", data)
    monkeypatch.setattr(demo.run_demo, "__defaults__", (demo.run_demo.__defaults__[0], demo.run_demo.__defaults__[1]))
    out = tmp_path / "demo"
    real = demo.standard_methods
    monkeypatch.setattr(
        demo,
        "standard_methods",
        lambda *a, **k: {
            n: Method(
                m.name,
                m.label,
                {
                    **m.options,
                    "steps": 2,
                    "batch_size": 2,
                    "encoder": ("ddpm-ct-tiny" if m.options["encoder"] == "ddpm-ct" else m.options["encoder"]),
                    "encoder_weights": None,
                },
            )
            for n, m in real(*a, **k).items()
        },
    )
    summary = demo.run_demo(
        out,
        StudyConfig(budgets=("2", "4"), seeds=(0,), image_size=64, block=3, gap=1),
        data=data,
        progress=False,
        log=lambda _: None,
    )
    text = summary.read_text()
    assert "default recipe (contrast phases" in text and "release 0.2 recipe" in text
    assert "pseudo ground truth" in text and "non-contrast" in text and "median HU inside its labels" in text
    assert "Within-volume" not in text and "±" not in text  # the demo scores the other scan only; one seed
    assert "Errors at budget 2" in text and "where each true organ's voxels were predicted" in text
    assert (out / "report" / "overlays.png").stat().st_size > 10_000
    assert (out / "report" / "dsc_vs_budget.png").is_file()
    rows = read_results_csv(out / "report" / "results.csv")
    assert {r["method"] for r in rows} == {"ddpm-unet", "ddpm-unet-noaug"}
    assert len(rows) == 4 and {r["protocol"] for r in rows} == {"cross-patient"}  # 2 methods x 2 budgets


def test_spread_slices_cover_the_scan() -> None:
    from smp_diffusion_encoder.study.demo import spread_slices

    gt = np.zeros((20, 4, 4), np.uint8)
    gt[2:18, 1, 1] = 1
    assert spread_slices(gt) == [4, 10, 15]  # not three neighbours
    assert spread_slices(np.zeros((2, 4, 4), np.uint8)) == [0, 1]


def test_a_partly_labeled_scan_is_held_out_and_scored_on_its_labeled_slices_only(tmp_path: Path) -> None:
    from smp_diffusion_encoder.data.labeled_slices import write_sidecar
    from smp_diffusion_encoder.data.volume import read_volume, write_label_map

    root = write_phantom_dataset(tmp_path / "phantom", n_labeled=3, n_unlabeled=0, shape=(16, 32, 32))
    cases = FlareDataset.discover(root).labeled
    listed = [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14]
    for case in cases:  # every case partly labeled: the others' organs erased, slice 14 labeled as empty
        label = read_volume(case.label, kind="label")
        keep = np.zeros_like(label.array)
        keep[listed[:-1]] = label.array[listed[:-1]]
        write_label_map(keep, label, case.label)
        write_sidecar(case.label.with_name(f"{case.case_id}.slices.json"), listed)
    plan = holdout([cases[0]], StudyConfig(block=2, gap=1))
    ((case, evaluated),) = plan.evaluation
    assert set(evaluated) <= set(listed) and set(plan.pool[case.case_id]) <= set(listed)
    plan = holdout(cases, StudyConfig(test_cases=1))
    ((held, scored),) = plan.evaluation
    assert scored == tuple(listed)  # a held-out partly labeled case: its labeled slices, not the whole scan
