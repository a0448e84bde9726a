"""Folders written before the formats moved (0.2.0.dev0 at 7ea93bf: ``fixtures/old_layouts``, made by
``fixtures/make_old_layouts.py`` with that version's own writers) load with today's code, unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import load_file

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder import EncoderSpec, FeatureConfig
from smp_diffusion_encoder.formats import load_encoder_weights, load_model, load_run, open_encoder_weights
from smp_diffusion_encoder.formats.packaged import hash_folder, seed_hf_cache
from smp_diffusion_encoder.formats.run_folder import milestones, read_run_config, training_hours
from smp_diffusion_encoder.models import DiffusionUNet, UNetConfig
from smp_diffusion_encoder.registry import load_encoder, register_encoder, register_encoder_from_folder
from smp_diffusion_encoder.training import EMA
from smp_diffusion_encoder.training.checkpoint import load_checkpoint, restore_checkpoint
from smp_diffusion_encoder.training.run_folder import saved_settings
from tests.formats.fixtures.make_old_layouts import MICRO, MICRO_NAME

OLD = Path(__file__).parent / "fixtures" / "old_layouts"
PREP = PreprocessingConfig(image_size=32)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_old_encoder_weights_folder(registry_snapshot: None) -> None:
    folder = OLD / "weights"
    state, config = load_encoder_weights(folder)
    assert _same(state, load_file(folder / "model.safetensors"))
    opened = open_encoder_weights(folder)
    assert opened.spec == EncoderSpec(MICRO, FeatureConfig()) and opened.preprocessing == PREP
    register_encoder_from_folder("old-weights", folder)
    encoder = load_encoder("old-weights")
    assert encoder.pretrained_cfg.preprocessing == PREP and encoder.pretrained_cfg.weights == "ct"
    assert _same({k: v for k, v in encoder.state_dict().items()}, state)
    model = smp.Unet("old-weights", encoder_weights="ct", in_channels=1, classes=3)  # smp's own loader
    assert _same({f"{k}": v for k, v in model.encoder.state_dict().items() if k in state}, state)


def test_old_encoder_weights_as_a_hub_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    revision = hash_folder(OLD / "weights")
    seed_hf_cache(OLD / "weights", "old-org/old-weights", revision, tmp_path)
    state, _ = load_encoder_weights("old-org/old-weights", revision=revision)  # offline: the cached snapshot
    assert _same(state, load_file(OLD / "weights" / "model.safetensors"))


def test_old_smp_model_folder(registry_snapshot: None) -> None:
    register_encoder(MICRO_NAME, MICRO, FeatureConfig())
    segmenter = load_model(OLD / "model_smp")
    assert (segmenter.kind, segmenter.num_classes, segmenter.preprocessing) == ("smp", 3, PREP)
    assert _same(segmenter.module.state_dict(), load_file(OLD / "model_smp" / "model.safetensors"))
    assert segmenter.module(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.parametrize("name", ["model_probe_linear", "model_probe_mlp", "model_probe_first"])
def test_old_probe_folders(name: str) -> None:
    segmenter = load_model(OLD / name)
    assert (segmenter.kind, segmenter.num_classes, segmenter.preprocessing) == ("probe", 3, PREP)
    assert _same(segmenter.module.state_dict(), load_file(OLD / name / "model.safetensors"))
    assert segmenter.module(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


def test_old_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(OLD / "run", run)
    info = load_run(run)
    assert (info.weights_kind, info.step, info.unet_config, info.preprocessing) == ("ema", 4, UNetConfig(**MICRO), PREP)
    assert list(milestones(run)) == [4]
    kept = load_run(run, milestone=4)
    assert kept.step == 4 and _same(kept.state_dict, load_file(run / "milestones" / "step-0000004.safetensors"))
    assert read_run_config(run / "config.json")["pretrain"]["steps"] == 4
    assert saved_settings(run)["steps"] == 4 and saved_settings(run)["milestones"] == [4]
    assert set(training_hours(run)) == {0, 2, 4}
    state = load_checkpoint(run / "checkpoint.pt")  # --resume reads it
    model = DiffusionUNet(MICRO)
    ema = EMA(model, decay=0.9)
    step = restore_checkpoint(
        state, model=model, optimizer=torch.optim.AdamW(model.parameters()), ema=ema, restore_rng=False
    )
    assert step == 4 and _same(ema.module.state_dict(), info.state_dict)
