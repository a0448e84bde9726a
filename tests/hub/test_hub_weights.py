"""The weights folder: layout, config keys smp and timm read, model card, validation, atomic writes."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from timm.models._pretrained import PretrainedCfg

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder import DDPMEncoder, EncoderSpec, FeatureConfig
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub import load_encoder_weights, save_encoder_weights
from smp_diffusion_encoder.hub.weights import config_preprocessing, read_safetensors
from smp_diffusion_encoder.models import PRESETS
from tests.hub.hub_helpers import tiny_encoder, write_tiny_weights


def test_layout_and_config_keys(tiny_weights: tuple[Path, dict]) -> None:
    folder, _ = tiny_weights
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architecture"] == "ddpm_ct_unet_tiny" and cfg["smp_encoder"] == "ddpm-ct-tiny"
    assert cfg["model_args"] == {"unet": PRESETS["tiny"].to_dict(), "features": FeatureConfig().to_dict()}
    assert (cfg["mean"], cfg["std"], cfg["input_range"], cfg["num_classes"]) == ([0.5], [0.5], [0, 1], 0)
    assert cfg["preprocessing"] == {"hu_window": [-160.0, 240.0], "image_size": 64, "spacing_mm": 6.0}
    fields = {f.name for f in dataclasses.fields(PretrainedCfg)}
    assert set(cfg["pretrained_cfg"]) <= fields  # timm builds PretrainedCfg(**pretrained_cfg)
    assert cfg["pretrained_cfg"]["hf_hub_filename"] == "model.safetensors"
    assert not list(folder.glob(".*tmp*"))  # atomic writes leave nothing behind


def test_card_states_missing_fields_as_not_recorded(tiny_weights: tuple[Path, dict]) -> None:
    card = (tiny_weights[0] / "README.md").read_text()
    assert "license: apache-2.0" in card and "Pretraining data: synthetic test data" in card
    assert "Pretraining command: `not recorded`" in card and "## Metrics\nnot recorded" in card


def test_round_trip_strict_loads_into_smp_encoder_and_timm_model(tiny_weights: tuple[Path, dict]) -> None:
    import timm

    folder, expected = tiny_weights
    sd, cfg = load_encoder_weights(folder)
    assert sd.keys() == expected.keys() and all(torch.equal(sd[k], expected[k]) for k in sd)
    enc = DDPMEncoder(**cfg["model_args"])
    enc.load_state_dict(sd, strict=True)
    model = timm.create_model(cfg["architecture"])
    model.load_state_dict(sd, strict=True)


def test_wrong_architecture_is_refused_before_writing(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="do not match the encoder architecture"):
        save_encoder_weights(tiny_encoder(), tmp_path / "w", EncoderSpec("small"), PreprocessingConfig(image_size=64))
    assert not (tmp_path / "w" / "model.safetensors").exists()


def test_channels_last_weights_save_as_they_are(tmp_path: Path) -> None:
    """Any state dict we hand out saves with safetensors: channels-last (non-contiguous) tensors included."""
    enc = tiny_encoder().to(memory_format=torch.channels_last)
    assert not all(v.is_contiguous() for v in enc.state_dict().values())
    save_encoder_weights(enc, tmp_path / "w", EncoderSpec("tiny"), PreprocessingConfig(image_size=64))
    sd, _ = load_encoder_weights(tmp_path / "w")
    assert all(torch.equal(sd[k], v) for k, v in enc.state_dict().items())


def test_legacy_preprocessing_is_kept_from_an_old_weights_folder(
    tiny_weights: tuple[Path, dict], tmp_path: Path
) -> None:
    """A folder written before physical preprocessing (no spacing_mm) keeps the whole-field-of-view layout."""
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(tiny_weights[0], folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["preprocessing"] = {"hu_window": [-160.0, 240.0], "image_size": 64}
    (folder / "config.json").write_text(json.dumps(cfg))
    _, loaded = load_encoder_weights(folder)
    assert config_preprocessing(loaded, source=str(folder)) == PreprocessingConfig(image_size=64, spacing_mm=None)


def test_pickle_only_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"no model.safetensors; only pickle-based weights \['pytorch_model.bin'\]"):
        load_encoder_weights(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "pad", "header"])
def test_damaged_safetensors_never_load(tmp_path: Path, damage: str) -> None:
    folder = tmp_path / "w"
    write_tiny_weights(folder)
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"truncate": data[:-100], "pad": data + b"\0" * 8, "header": b"\xff" * 8 + data[8:]}[damage])
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_encoder_weights(folder)
    with pytest.raises(WeightsError):
        read_safetensors(f, source=str(f))
