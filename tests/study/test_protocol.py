"""The few-shot protocol on the CT phantom: held-out data never trains, scoring is FLARE-exact, resume skips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.flare import FlareDataset
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import read_split_json
from smp_diffusion_encoder.data.volume import read_volume, write_label_map
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.evaluation import evaluate_case
from smp_diffusion_encoder.inference import load_model
from smp_diffusion_encoder.study import protocol
from smp_diffusion_encoder.study.protocol import Method, holdout, run_study, score_slices, standard_methods
from smp_diffusion_encoder.study.results import read_results_csv

TINY = dict(encoder="ddpm-ct-tiny", encoder_weights=None, steps=2, batch_size=2, val_every=1)
METHODS = [Method("probe", "tiny probe", {**TINY, "method": "probe"}),
           Method("unet", "tiny unet", {**TINY, "method": "unet"})]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=3, n_unlabeled=0, shape=(16, 64, 64))


def test_single_case_block_holdout_never_trains_near_scored_slices(root: Path, tmp_path: Path) -> None:
    case = FlareDataset.discover(root).labeled[0]
    plan = holdout([case], block=3, gap=1, seed=0)
    (scored_case, scored), = plan.evaluation
    assert scored_case == case and scored
    rows = run_study(plan, tmp_path, methods=METHODS[:1], budgets=["2"], seeds=[0, 1], progress=False,
                     keep_models=True)
    assert [(r["method"], r["seed"], r["n_train_slices"]) for r in rows] == [("probe", 0, 2), ("probe", 1, 2)]
    for seed in (0, 1):
        split = read_split_json(tmp_path / "runs" / "probe" / "2" / f"seed{seed}" / "split.json")
        used = [z for _, z in split.train + split.evaluation]
        assert used and all(abs(z - s) > 1 for z in used for s in scored)
    assert 0 <= rows[0]["mean_DSC"] <= 1


def test_whole_held_out_cases_score_like_the_official_evaluator(root: Path, tmp_path: Path) -> None:
    plan = holdout(root, test_cases=1, seed=0)
    assert len(plan.train_cases) == 2 and len(plan.evaluation) == 1
    (case, zs), = plan.evaluation
    assert case not in plan.train_cases and len(zs) == 16
    seen = []
    rows = run_study(plan, tmp_path, methods=METHODS, budgets=["4", "all"], seeds=[0], progress=False,
                     keep_models=True, observe=lambda m, b, s, c, gt, pred, z: seen.append((m.name, b, gt.shape)))
    assert [(r["method"], r["budget"]) for r in rows] == [("probe", "4"), ("unet", "4"), ("probe", "all"),
                                                          ("unet", "all")]
    assert seen[0] == ("probe", "4", (16, 64, 64))
    assert rows[2]["n_train_slices"] > 4
    model_dir = tmp_path / "runs" / "unet" / "all" / "seed0" / "model"
    metrics, _, pred = score_slices(load_model(model_dir), case, zs)
    written = write_label_map(pred, read_volume(case.image), tmp_path / f"{case.case_id}.nii.gz")
    official = evaluate_case(written, case.label).metrics
    assert set(official) == set(metrics)
    assert all(np.isclose(official[k], metrics[k], equal_nan=True) for k in metrics)
    assert read_results_csv(tmp_path / "results.csv")[3]["mean_DSC"] == pytest.approx(rows[3]["mean_DSC"], abs=1e-4)


def test_study_resumes_and_drops_weights(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = holdout(root, test_cases=2, seed=1)
    run_study(plan, tmp_path, methods=METHODS[:1], budgets=["4"], seeds=[0], progress=False)
    run_dir = tmp_path / "runs" / "probe" / "4" / "seed0"
    assert (run_dir / "split.json").is_file() and not (run_dir / "model").exists()
    assert not (run_dir / "checkpoint.pt").exists()
    calls = []
    real = protocol.finetune
    monkeypatch.setattr(protocol, "finetune", lambda *a, **k: calls.append(k["seed"]) or real(*a, **k))
    rows = run_study(plan, tmp_path, methods=METHODS[:1], budgets=["4"], seeds=[0, 1], progress=False)
    assert calls == [1] and len(rows) == 4  # seed 0 was reused, 2 held-out cases per run


def test_standard_methods_and_bad_holdout(root: Path) -> None:
    methods = standard_methods("ddpm-ct", "ct", steps=100)
    assert list(methods) == ["ddpm-probe", "ddpm-mlp", "ddpm-unet", "ddpm-unet-ft", "random-unet",
                             "random-probe", "resnet34-scratch"]
    assert methods["ddpm-unet-ft"].options["unfreeze_at"] == 50
    assert methods["random-unet"].options["encoder_weights"] is None
    assert methods["resnet34-scratch"].options["unfreeze_at"] == 0
    with pytest.raises(ConfigError, match="test_cases"):
        holdout(root, test_cases=3)


def test_demo_command_writes_a_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "1", "--budgets", "4", "--image-size", "64",
                 "--no-progress"]) == 0
    summary = (out / "report" / "summary.md").read_text()
    assert "resnet34" in summary and "Unet decoder" in summary and "linear probe" in summary
    assert (out / "report" / "overlays.png").stat().st_size > 10_000
    assert (out / "report" / "dsc_vs_budget.png").is_file()
    rows = read_results_csv(out / "report" / "results.csv")
    assert {r["method"] for r in rows} == {"ddpm-unet", "ddpm-probe", "resnet34-scratch"}
    assert len(rows) == 6  # 3 methods x 2 held-out cases
