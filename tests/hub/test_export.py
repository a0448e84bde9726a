"""Export: a run's full U-Net -> encoder weights that smp and timm load strictly, with identical features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors.torch import load_file

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from smp_diffusion_encoder.cli.main import main
from smp_diffusion_encoder.encoder import EncoderSpec, FeatureConfig, FeaturePyramid, encoder_state_dict
from smp_diffusion_encoder.errors import WeightsError
from smp_diffusion_encoder.hub import load_encoder_weights
from smp_diffusion_encoder.hub.export import export_encoder
from smp_diffusion_encoder.models import DiffusionUNet
from tests.training.run_helpers import write_run


@pytest.fixture(scope="module")
def exported(tiny_run: tuple[Path, dict], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "w"
    assert main(["export", str(tiny_run[0]), str(out), "--variant", "ddpm-ct-tiny", "--license", "apache-2.0"]) == 0
    return out, tiny_run[1]


def test_exported_weights_are_the_truncated_unet(exported: tuple[Path, dict]) -> None:
    out, unet_sd = exported
    sd = load_file(str(out / "model.safetensors"))
    with torch.device("meta"):
        keys = set(FeaturePyramid("tiny", FeatureConfig()).state_dict())
    assert set(sd) == keys and not any(k.startswith("unet.out.") for k in sd)
    assert len(keys) < len(unet_sd)  # decoder blocks after the last used one are dropped
    assert all(torch.equal(v, unet_sd[k.removeprefix("unet.")]) for k, v in sd.items())
    config = json.loads((out / "config.json").read_text())
    assert config["smp_encoder"] == "ddpm-ct-tiny" and config["preprocessing"]["image_size"] == 64
    card = (out / "README.md").read_text()
    assert "Pretraining data: synthetic test phantom" in card and "smp-diffusion pretrain" in card
    assert "ema weights, ema.safetensors" in card


def test_smp_and_timm_load_it_strictly_with_the_features_of_the_unet(exported: tuple[Path, dict]) -> None:
    out, unet_sd = exported
    sd, _ = load_encoder_weights(out)
    model = smp.Unet("ddpm-ct-tiny", encoder_weights=None, in_channels=1, classes=3)
    model.encoder.load_state_dict(sd, strict=True)
    # timm's own pretrained path from a local file (strict load inside timm), as features_only
    getter = timm.create_model(
        "ddpm_ct_unet_tiny",
        features_only=True,
        pretrained=True,
        pretrained_cfg_overlay={"file": str(out / "model.safetensors")},
    )
    net = DiffusionUNet("tiny")
    net.load_state_dict(unet_sd)
    direct = FeaturePyramid("tiny", FeatureConfig())
    direct.unet.load_state_dict({k: v for k, v in net.state_dict().items() if k in direct.unet.state_dict()})
    x = torch.rand(1, 1, 64, 64) * 2 - 1
    with torch.no_grad():
        ref = direct.eval().pyramid(x)
        ours_smp = model.encoder.eval()(x)
        ours_timm = getter.eval()(x)
    assert len(ours_smp) == len(ref) == len(ours_timm)
    for a, b, c in zip(ref, ours_smp, ours_timm):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(c, a)


def test_mismatched_architecture_and_shapes_are_named(tiny_run: tuple[Path, dict], tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"not variant 'ddpm-ct'.*unet.model_channels: 32 vs 8,.*\(variant vs run\)"):
        export_encoder(tiny_run[0], tmp_path / "w", variant="ddpm-ct")
    sd = dict(tiny_run[1])
    sd["time_embed.0.weight"] = torch.zeros(3, 3)
    del sd["middle_block.0.in_conv.bias"]
    tiny = EncoderSpec("tiny", FeatureConfig())
    with pytest.raises(WeightsError, match=r"1 tensors missing \(e.g. \['unet.middle_block.0.in_conv.bias'\]\)"):
        encoder_state_dict(sd, tiny, source="x", strict=False)
    sd["middle_block.0.in_conv.bias"] = torch.zeros(1)
    with pytest.raises(
        WeightsError, match=r"2 shape mismatches: .*time_embed.0.weight is \(3, 3\), expected \(32, 8\)"
    ):
        encoder_state_dict(sd, tiny, source="x", strict=False)
    with pytest.raises(WeightsError, match=r"unexpected \(e.g. \['unet.out"):  # a whole U-Net is not an encoder file
        encoder_state_dict(dict(tiny_run[1]), tiny, source="x", strict=True)
    assert not (tmp_path / "w").exists()


def test_raw_weights_from_the_checkpoint(tmp_path: Path) -> None:
    write_run(tmp_path / "r", ema=False, checkpoint=True)
    out = export_encoder(tmp_path / "r", tmp_path / "w", variant="ddpm-ct-tiny", use_ema=False)
    card = (out / "README.md").read_text()
    assert "Pretraining steps: 1234" in card and "model weights, checkpoint.pt" in card
    assert "Pretraining data: 12 slices of a slice store" in card and "/data/store" not in card
    raw = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]
    sd, _ = load_encoder_weights(out)
    assert torch.equal(sd["unet.time_embed.0.weight"], raw["module.time_embed.0.weight"])
