"""--ensemble N: N models on the same labeled slices, one model folder that predicts with their mean probability."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import pytest
import torch

import smp_diffusion_encoder  # noqa: F401  (registers ddpm-ct-tiny)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.data.phantom import write_phantom_dataset
from smp_diffusion_encoder.data.splits import read_split_json
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.finetune import FinetuneConfig, finetune
from smp_diffusion_encoder.formats.model_folder import load_model, save_ensemble
from smp_diffusion_encoder.heads import ModelEnsemble

UNET = dict(method="unet", encoder="ddpm-ct-tiny", budget="3", batch_size=2, steps=2, augment_views=2)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("phantom"), n_labeled=1, n_unlabeled=0, shape=(12, 48, 48))


@pytest.fixture(scope="module")
def ensemble_run(root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ens") / "run"
    finetune(root, FinetuneConfig(**UNET, ensemble=2, seed=3), out_dir=out, progress=False)
    return out


def test_members_share_the_slices_and_differ_in_seed(ensemble_run: Path) -> None:
    members = [ensemble_run / "members" / f"member{k}" for k in range(2)]
    splits = [read_split_json(m / "split.json") for m in members]
    assert splits[0].train == splits[1].train == read_split_json(ensemble_run / "split.json").train
    seeds = [json.loads((m / "config.json").read_text())["seed"] for m in members]
    assert seeds == [3, 1003]
    summary = json.loads((ensemble_run / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["reason"].startswith("2 models on the same slices")
    assert json.loads((ensemble_run / "config.json").read_text())["ensemble"] == 2


def test_the_model_folder_predicts_the_members_mean_probability(ensemble_run: Path, root: Path, tmp_path: Path) -> None:
    model = load_model(ensemble_run / "model")
    assert model.kind == "ensemble" and model.num_classes == 14 and isinstance(model.module, ModelEnsemble)
    members = [load_model(ensemble_run / "members" / f"member{k}" / "model") for k in range(2)]
    assert model.preprocessing == members[0].preprocessing and model.postprocessing == members[0].postprocessing
    x = torch.randn(2, 1, 48, 48)
    with torch.no_grad():
        mean = torch.stack([m.module(x).softmax(1) for m in members]).mean(0)
        torch.testing.assert_close(model.module(x).softmax(1), mean, atol=1e-5, rtol=0)
    moved = shutil.copytree(ensemble_run / "model", tmp_path / "elsewhere")  # the model folder is self-contained
    image = next(root.rglob("*_0000.nii.gz"))
    assert main(["predict", str(image), "--model", str(moved), "--out", str(tmp_path / "pred")]) == 0
    (pred,) = (tmp_path / "pred").glob("*.nii.gz")
    assert nib.load(pred).shape == nib.load(image).shape


def test_resume_keeps_finished_members_and_a_second_start_is_refused(root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = FinetuneConfig(**UNET, ensemble=2)
    finetune(root, config, out_dir=out, progress=False)
    weights = out / "members" / "member0" / "model" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    with pytest.raises(ConfigError, match="--resume"):
        finetune(root, config, out_dir=out, progress=False)
    shutil.rmtree(out / "members" / "member1")  # as if interrupted before member 1 started
    shutil.rmtree(out / "model")
    finetune(root, config, out_dir=out, progress=False, resume=True)
    assert weights.stat().st_mtime_ns == before  # member 0 was not trained again
    assert load_model(out / "model").kind == "ensemble"


def test_resume_refuses_other_settings_and_finds_members_by_place(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = FinetuneConfig(**UNET, ensemble=2)
    finetune(root, config, out_dir=Path("first"), progress=False)  # a relative folder, as a user types it
    with pytest.raises(ConfigError, match="steps 2 then, 3 now"):
        finetune(root, FinetuneConfig(**{**UNET, "steps": 3}, ensemble=2), out_dir="first", resume=True)
    with pytest.raises(ConfigError, match="ensemble"):
        finetune(root, FinetuneConfig(**UNET, ensemble=3), out_dir="first", resume=True)
    with pytest.raises(ConfigError, match="holds an ensemble run"):  # a single run, with or without --resume
        finetune(root, FinetuneConfig(**UNET), out_dir="first", progress=False)
    with pytest.raises(ConfigError, match="holds an ensemble run"):
        finetune(root, FinetuneConfig(**UNET), out_dir="first", progress=False, resume=True)
    with pytest.raises(ConfigError, match="no ensemble run"):
        finetune(root, config, out_dir="nothing-here", progress=False, resume=True)
    finetune(root, FinetuneConfig(**UNET), out_dir="single", progress=False)
    with pytest.raises(ConfigError, match="holds an earlier run"):  # an ensemble into a single run's folder
        finetune(root, config, out_dir="single", progress=False)
    moved = shutil.move("first", tmp_path / "elsewhere" / "run")  # resumed from another place
    shutil.rmtree(Path(moved) / "members" / "member1")
    monkeypatch.chdir(root)
    finetune(root, config, out_dir=moved, progress=False, resume=True)
    assert load_model(Path(moved) / "model").kind == "ensemble"


def test_bad_ensembles_are_refused(ensemble_run: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ensemble must be"):
        FinetuneConfig(ensemble=0)
    member = ensemble_run / "model" / "member0"
    with pytest.raises(WeightsError, match="at least 2"):
        save_ensemble([member], tmp_path / "one")
    broken = tmp_path / "broken"
    shutil.copytree(ensemble_run / "model", broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "members": ["member0", "../x"]}))
    with pytest.raises(WeightsError, match="not a folder name"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "members": ["member0", "member0"]}))
    with pytest.raises(WeightsError, match="listed twice"):
        load_model(broken)
    (broken / "config.json").write_text(json.dumps({**config, "members": ["member0", "member9"]}))
    with pytest.raises(WeightsError, match="missing"):
        load_model(broken)
    other = json.loads((broken / "member1" / "preprocessing.json").read_text())
    (broken / "member1" / "preprocessing.json").write_text(json.dumps({**other, "hu_window": [-100.0, 200.0]}))
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="read slices differently"):
        load_model(broken)
    with pytest.raises(ConfigError):
        ModelEnsemble([torch.nn.Identity()])
