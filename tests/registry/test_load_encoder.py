"""One call loads an encoder with its weights and preprocessing; models built from it equal smp's own loading."""

from __future__ import annotations

import json

import segmentation_models_pytorch as smp
import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.heads import ProbeModel
from smp_diffusion_encoder.registry import load_encoder, load_weights, use_pretrained
from smp_diffusion_encoder.registry.records import packaged_weights, resolve


def _equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_packaged_weights_come_with_their_preprocessing() -> None:
    packaged = packaged_weights("ddpm-ct")
    assert packaged is not None
    encoder = load_encoder("ddpm-ct")  # "auto": the packaged CT weights
    cfg = encoder.pretrained_cfg
    recorded = json.loads((packaged.folder / "config.json").read_text())["preprocessing"]
    assert (cfg.weights, cfg.preprocessing) == ("ct", PreprocessingConfig.from_dict(recorded))
    assert str(packaged.folder) in cfg.source and cfg.spec == resolve("ddpm-ct").spec
    weights = load_weights("ddpm-ct", "ct")
    assert all(torch.equal(encoder.state_dict()[k], v) for k, v in weights.items())
    resized = load_encoder("ddpm-ct", image_size=64).pretrained_cfg.preprocessing
    assert (resized.hu_window, resized.image_size, resized.spacing_mm) == (cfg.preprocessing.hu_window, 64, 6.0)


def test_random_weights_and_encoders_that_are_not_ours() -> None:
    cfg = load_encoder("ddpm-ct-tiny", None).pretrained_cfg
    assert (cfg.weights, cfg.source, cfg.preprocessing) == (
        None,
        "random initialization",
        PreprocessingConfig(image_size=64),
    )
    baseline = load_encoder("resnet34", "auto")  # not ours: "auto" means random, smp's encoder
    assert baseline.pretrained_cfg.weights is None and baseline.pretrained_cfg.preprocessing.image_size == 256
    assert baseline.out_channels[-1] == 512


def test_smp_model_with_the_loaded_encoder_equals_smp_loading_the_weights_itself() -> None:
    encoder = load_encoder("ddpm-ct", "ct")
    torch.manual_seed(3)
    ours = smp.create_model("Unet", encoder_name="ddpm-ct", encoder_weights=None, in_channels=1, classes=14)
    use_pretrained(ours.encoder, encoder)
    torch.manual_seed(3)
    theirs = smp.create_model("Unet", encoder_name="ddpm-ct", encoder_weights="ct", in_channels=1, classes=14)
    assert _equal(ours, theirs) and ours.encoder.pretrained_cfg is encoder.pretrained_cfg


def test_probe_with_the_loaded_encoder_equals_loading_the_weights_by_name() -> None:
    spec = resolve("ddpm-ct").spec
    torch.manual_seed(4)
    ours = ProbeModel.build(spec.unet, spec.features, 14)
    use_pretrained(ours.encoder, load_encoder("ddpm-ct"))
    torch.manual_seed(4)
    theirs = ProbeModel.build(spec.unet, spec.features, 14)
    theirs.encoder.load_state_dict(load_weights("ddpm-ct", "ct"))
    assert _equal(ours, theirs)
