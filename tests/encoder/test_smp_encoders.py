"""Declarative encoder tests in the style of smp's own encoder tester.

Every smp architecture is built on the ddpm-ct encoder for each in_channels / depth / output_stride the
decoder allows, then run forward and backward. Architectures that cannot work are listed in
``UNSUPPORTED`` with the reason (the README repeats it). smp's own encoder and model testers (torch flags,
TorchScript, export, compile, save/load) are restated in ``test_smp_host_tests.py``.
"""

from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import get_encoder

import smp_diffusion_encoder  # noqa: F401  (registers the encoders)
from smp_diffusion_encoder.encoder import DDPMEncoder, FeatureConfig
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.registry import register_encoder
from smp_diffusion_encoder.registry.smp_names import write_all

ENCODER = "ddpm-ct-tiny"
in_channels_to_test = [1, 3]
depth_to_test = [3, 4, 5]
output_strides_to_test = [8, 16]
#: architecture -> depths it is correct at (smp facts: FPN is right only at depth 5, PSPNet's default
#: upsampling assumes depth 3, Segformer needs depth >= 3)
ARCHITECTURES = {
    "Unet": depth_to_test,
    "UnetPlusPlus": depth_to_test,
    "FPN": [5],
    "PSPNet": [3],
    "DeepLabV3": depth_to_test,
    "DeepLabV3Plus": depth_to_test,
    "Linknet": depth_to_test,
    "MAnet": depth_to_test,
    "PAN": [5],
    "UPerNet": depth_to_test,
    "Segformer": depth_to_test,
}
UNSUPPORTED = {"DPT": "needs a ViT-style 'tu-' encoder with patch tokens"}
MIN_SIZE = {"PAN": 128}  # PAN's pyramid attention needs >= 128 px


def _cases():
    for arch, depths in ARCHITECTURES.items():
        for depth in depths:
            for in_ch in in_channels_to_test:
                strides = output_strides_to_test if arch.startswith("DeepLab") else [None]
                for os_ in strides:
                    yield pytest.param(arch, depth, in_ch, os_, id=f"{arch}-d{depth}-c{in_ch}-os{os_}")


@pytest.mark.parametrize("arch, depth, in_ch, output_stride", list(_cases()))
def test_architecture_builds_and_trains(arch, depth, in_ch, output_stride):
    kwargs = {"encoder_depth": depth}
    if output_stride:
        kwargs["encoder_output_stride"] = output_stride
    if arch in ("Unet", "UnetPlusPlus", "MAnet"):
        kwargs["decoder_channels"] = [16] * depth
    model = getattr(smp, arch)(ENCODER, encoder_weights=None, in_channels=in_ch, classes=3, **kwargs)
    size = MIN_SIZE.get(arch, 64)
    x = torch.randn(2, in_ch, size, size)
    y = model(x)
    assert y.shape == (2, 3, size, size)
    y.mean().backward()
    stem = model.encoder.unet.input_blocks[0][0]
    assert stem.in_channels == in_ch and stem.weight.grad is not None


@pytest.mark.parametrize("arch, reason", list(UNSUPPORTED.items()))
def test_unsupported_architectures_fail_loudly(arch, reason):
    with pytest.raises(ValueError):
        getattr(smp, arch)(ENCODER, encoder_weights=None, in_channels=1, classes=3)


@pytest.mark.slow
def test_design_card_model_on_a_256_batch():
    """smp.Unet(encoder_name="ddpm-ct", in_channels=1, classes=14): forward + backward on (2, 1, 256, 256)."""
    model = smp.Unet(encoder_name="ddpm-ct", encoder_weights=None, in_channels=1, classes=14)
    y = model(torch.randn(2, 1, 256, 256))
    assert y.shape == (2, 14, 256, 256)
    y.mean().backward()


def test_encoder_contract():
    enc = get_encoder(ENCODER, in_channels=1, depth=5)
    assert isinstance(enc, DDPMEncoder)
    feats = enc(torch.randn(1, 1, 64, 64))
    assert len(feats) == 6 == len(enc.out_channels)
    for i, (f, c) in enumerate(zip(feats, enc.out_channels)):
        assert f.shape == (1, c, 64 // 2**i, 64 // 2**i)
    assert get_encoder(ENCODER, in_channels=1, depth=3).out_channels == enc.out_channels[:4]


@pytest.mark.parametrize("output_stride", output_strides_to_test)
def test_output_stride_caps_spatial_size(output_stride):
    enc = get_encoder(ENCODER, in_channels=1, depth=5, output_stride=output_stride)
    assert enc.output_stride == output_stride
    feats = enc(torch.randn(1, 1, 64, 64))
    assert [f.shape[-1] for f in feats] == [64 // min(2**i, output_stride) for i in range(6)]


def test_registration_is_idempotent_and_custom_names_work():
    write_all()
    write_all()
    register_encoder("my-ddpm-1t", "tiny", FeatureConfig(timesteps=(100,)))
    enc = get_encoder("my-ddpm-1t", in_channels=1, depth=5)
    assert enc.out_channels[0] == get_encoder(ENCODER, in_channels=1).out_channels[0] // 3
    with pytest.raises(ConfigError, match="tu-"):
        register_encoder("tu-mine", "tiny")


def test_unknown_weights_name_lists_what_exists():
    with pytest.raises(KeyError, match="Wrong pretrained weights"):
        smp.Unet(ENCODER, encoder_weights="no-such-weights", in_channels=1)
