import pytest
import segmentation_models_pytorch as smp
import timm
import torch

import smp_diffusion_encoder  # noqa: F401
from smp_diffusion_encoder.encoder import VARIANTS


def test_every_variant_is_registered_with_timm():
    names = set(timm.list_models("ddpm_ct_unet*"))
    assert {v.timm_name for v in VARIANTS} <= names


def test_features_only_returns_the_pyramid_via_the_getter():
    model = timm.create_model("ddpm_ct_unet_tiny", features_only=True)
    assert type(model).__name__ == "FeatureGetterNet"
    assert model.feature_info.reduction() == [1, 2, 4, 8, 16, 32]
    feats = model(torch.randn(2, 1, 64, 64))
    assert [f.shape[1] for f in feats] == model.feature_info.channels()
    assert [f.shape[-1] for f in feats] == [64, 32, 16, 8, 4, 2]


def test_out_indices_select_features():
    model = timm.create_model("ddpm_ct_unet_tiny", features_only=True, out_indices=(2, 4))
    assert model.feature_info.reduction() == [4, 16]
    assert [f.shape[-1] for f in model(torch.randn(1, 1, 64, 64))] == [16, 4]


def test_classifier_face_and_in_chans():
    model = timm.create_model("ddpm_ct_unet_tiny", num_classes=5, in_chans=3)
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 5)
    model.reset_classifier(0)
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, model.num_features)


def test_same_weights_layout_as_the_smp_encoder():
    timm_model = timm.create_model("ddpm_ct_unet_tiny", features_only=True)
    smp_encoder = smp.encoders.get_encoder("ddpm-ct-tiny", in_channels=1)
    timm_keys = {k.removeprefix("model.") for k in timm_model.state_dict()}
    assert timm_keys == set(smp_encoder.state_dict())


@pytest.mark.parametrize("in_channels", [1, 3])
def test_smp_tu_path(in_channels):
    model = smp.Unet(
        "tu-ddpm_ct_unet_tiny",
        encoder_weights=None,
        in_channels=in_channels,
        classes=4,
        decoder_channels=(16, 16, 16, 16, 16),
    )
    # VGG-style pyramid: smp keeps the real stride-1 features
    assert (
        model.encoder.out_channels[0]
        == timm.create_model("ddpm_ct_unet_tiny", features_only=True).feature_info.channels()[0]
    )
    y = model(torch.randn(2, in_channels, 64, 64))
    assert y.shape == (2, 4, 64, 64)
    y.mean().backward()
