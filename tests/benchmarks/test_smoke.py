"""Every benchmark script runs end to end on tiny arguments (tiny U-Nets, a small phantom, two training steps), so a
change that breaks one is caught here rather than by the next person who measures. The numbers mean nothing.

Benchmarks run as modules from the repository root (``python -m benchmarks.NAME``); here their ``main(argv)`` is
called in this process (the scripts that time fresh processes start those themselves). The few-shot schedule
rule is shrunk to two steps for the study-type benchmarks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.data.slice_store import build_slice_store
from smp_diffusion_encoder.finetune import schedule
from smp_diffusion_encoder.registry import register_encoder_from_folder
from smp_diffusion_encoder.study.results import read_results_csv
from tests.hub.hub_helpers import write_tiny_weights
from tests.training.run_helpers import write_run

BENCHMARKS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("[!_]*.py"))
STUDY = ["--seeds", "0", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=1, n_unlabeled=2, shape=(24, 64, 64))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny`` pretraining run with the milestone of step 0 and two logged windows."""
    run = tmp_path_factory.mktemp("runs") / "tiny"
    write_run(run)
    (run / "milestones").mkdir()
    shutil.copyfile(run / "ema.safetensors", run / "milestones" / "step-0000000.safetensors")
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "pretrain": {"batch_size": 2}}))
    (run / "metrics.csv").write_text("step,loss,lr,images_per_s\n1,1.0,0.0001,4.0\n2,0.9,0.0001,4.0\n")
    return run


@pytest.fixture
def tiny_encoder(tmp_path: Path, registry_snapshot: None, monkeypatch: pytest.MonkeyPatch) -> str:
    """``bench-tiny``: the ``tiny`` architecture with weights under ``ct``; the schedule rule shrunk to 2 steps."""
    write_tiny_weights(tmp_path / "weights")
    monkeypatch.setattr(schedule, "RULES", {k: schedule.ScheduleRule(1, 2, 2) for k in schedule.RULES})
    return register_encoder_from_folder("bench-tiny", tmp_path / "weights")


def test_every_benchmark_has_a_smoke_test() -> None:
    """A test named after each script (here, or its own file ``test_NAME.py`` beside this one) imports it;
    ``train_step_options`` runs through ``train_step --options``."""
    here = Path(__file__).resolve().parent
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    tested |= {
        p.stem.removeprefix("test_")
        for p in here.glob("test_*.py")
        if f"from benchmarks import {p.stem.removeprefix('test_')}" in p.read_text()
    }
    assert set(BENCHMARKS) <= tested | {"train_step_options"}, sorted(set(BENCHMARKS) - tested)


def test_no_benchmark_edits_sys_path() -> None:
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    assert not [p.name for p in root.glob("*.py") if "sys.path" in p.read_text()]


def test_feature_extraction(tmp_path: Path) -> None:
    from benchmarks import feature_extraction

    feature_extraction.main(
        [
            "--preset",
            "tiny",
            "--size",
            "64",
            "--batch",
            "1",
            "--repeats",
            "1",
            "--blocks",
            "3",
            "4",
            "5",
            "6",
            "--out",
            str(tmp_path / "r.md"),
        ]
    )
    assert "ratio reference / ours" in (tmp_path / "r.md").read_text()


def test_probe_memory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks import probe_memory

    probe_memory.main(
        [
            "--preset",
            "tiny",
            "--size",
            "32",
            "--n",
            "2",
            "--naive-n",
            "1,2",
            "--z",
            "2",
            "--encoder",
            "ddpm-ct-tiny",
            "--volume-side",
            "48",
            "--selections",
            "default",
            "--no-write",
        ]
    )
    assert "Full-volume inference on CPU" in capsys.readouterr().out


def test_data_throughput(tmp_path: Path) -> None:
    from benchmarks import data_throughput

    data_throughput.main(
        [
            "--phantoms",
            "2",
            "--phantom-shape",
            "6",
            "48",
            "48",
            "--image-size",
            "32",
            "--max-batches",
            "1",
            "--realct",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "r.md"),
        ]
    )
    assert "store (num_workers=0) vs reference" in (tmp_path / "r.md").read_text()


def test_precision(tmp_path: Path) -> None:
    from benchmarks import precision

    precision.main(["--repeats", "1", "--encoder", "ddpm-ct-tiny", "--size", "32", "--out", str(tmp_path / "r.md")])
    assert "speed-up" in (tmp_path / "r.md").read_text()


def test_startup(tmp_path: Path) -> None:
    from benchmarks import startup

    startup.main(["--repeats", "1", "--only", "smp-diffusion --help", "--out", str(tmp_path / "r.md")])
    assert "`smp-diffusion --help`" in (tmp_path / "r.md").read_text()


def test_train_step(tmp_path: Path, phantom: Path) -> None:
    from benchmarks import train_step

    store = tmp_path / "store"
    volumes = sorted((phantom / "Training").rglob("PHANTOM_Un_*.nii.gz"))
    build_slice_store(volumes, store, PreprocessingConfig(image_size=64), workers=1, progress=False)
    train_step.main(
        [
            "--options",
            "--store",
            str(store),
            "--preset",
            "tiny",
            "--batch",
            "2",
            "--repeats",
            "1",
            "--loss-steps",
            "2",
            "--no-compile",
            "--out",
            str(tmp_path / "options.md"),
        ]
    )
    assert "CPU speed options, `tiny` preset" in (tmp_path / "options.md").read_text()
    pytest.importorskip("diffusers", reason="the comparison with diffusers needs pip install -e '.[bench]'")
    train_step.main(["--preset", "tiny", "--batch", "1", "--repeats", "1", "--out", str(tmp_path / "r.md")])
    assert (tmp_path / "r.md").is_file()


def test_fewshot(tmp_path: Path, phantom: Path, tiny_encoder: str) -> None:
    from benchmarks import fewshot

    fewshot.main(
        [
            str(phantom),
            "--out",
            str(tmp_path / "out"),
            "--encoder",
            tiny_encoder,
            "--weights",
            "ct",
            "--methods",
            "ddpm-probe",
            "--budgets",
            "2",
            "--block",
            "3",
            "--gap",
            "1",
            *STUDY,
            "--postprocessing",
            "none",
            "lcc+z3",
            "--override",
            "augment_views=2",
        ]
    )
    assert (tmp_path / "out" / "summary.md").is_file()
    rows = read_results_csv(tmp_path / "out" / "results.csv")
    assert {r["method"] for r in rows} == {
        "ddpm-probe[augment_views=2]",
        "ddpm-probe[augment_views=2]/none",
        "ddpm-probe[augment_views=2]/lcc+z3",
    }
    with pytest.raises(SystemExit, match="unknown variant part 'x'"):
        fewshot.parse_postprocessing("lcc+x")


def test_feature_selection(tmp_path: Path, phantom: Path, tiny_encoder: str) -> None:
    from benchmarks import feature_selection

    feature_selection.main(
        [
            str(phantom),
            "--encoder",
            tiny_encoder,
            "--weights",
            "ct",
            "--methods",
            "ddpm-probe",
            "--budgets",
            "2",
            "--seeds",
            "0",
            "--selection-steps",
            "2",
            "--timesteps",
            "50",
            "150",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "selected" / "selection.json").is_file()


def test_compute_curve(tmp_path: Path, phantom: Path, tiny_run: Path, tiny_encoder: str) -> None:
    from benchmarks import compute_curve

    compute_curve.main(
        [
            str(tiny_run),
            str(phantom),
            "--variant",
            "ddpm-ct-tiny",
            "--methods",
            "ddpm-probe",
            "--budget",
            "2",
            "--seeds",
            "0",
            "--reference",
            tiny_encoder,
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "compute_curve.png").is_file()
    weights = [row["weights"] for row in read_results_csv(tmp_path / "out" / "results.csv")]
    assert f"{tiny_encoder} ct" in weights and any(w.startswith("step ") for w in weights)
    assert f"| reference: {tiny_encoder} ct weights |" in (tmp_path / "out" / "summary.md").read_text()


def test_finetune_schedule(tmp_path: Path, phantom: Path, tiny_run: Path, tiny_encoder: str) -> None:
    from benchmarks import finetune_schedule

    finetune_schedule.main(
        [
            str(phantom),
            "--run",
            str(tiny_run),
            "--milestone",
            "0",
            "--variant",
            "ddpm-ct-tiny",
            "--methods",
            "ddpm-probe",
            "--budgets",
            "2",
            "--scales",
            "1",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "summary.md").is_file()


def test_preprocessing_spacing(tmp_path: Path, phantom: Path, tiny_run: Path, tiny_encoder: str) -> None:
    from benchmarks import preprocessing_spacing

    preprocessing_spacing.main(
        [
            str(phantom),
            "--run",
            str(tiny_run),
            "--variant",
            "ddpm-ct-tiny",
            "--methods",
            "ddpm-probe",
            "--seeds",
            "0",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert (tmp_path / "out" / "summary.md").is_file()
