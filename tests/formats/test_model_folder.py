"""The training side's path to a probe folder: cached features -> probe -> ProbeModel -> save -> load."""

import pytest
import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder import DiffusionFeatureEncoder, FeatureConfig
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.formats import load_probe, save_probe
from smp_diffusion_encoder.heads import FeatureCache, LinearProbe, ProbeModel
from smp_diffusion_encoder.models import DiffusionUNet


def test_probe_trained_on_cached_features_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    unet = DiffusionUNet("tiny")
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    encoder = DiffusionFeatureEncoder(unet, FeatureConfig(timesteps=(50, 150))).eval()
    x = torch.rand(2, 1, 64, 64) * 2 - 1
    feats = FeatureCache(encoder).features(["s:0", "s:1"], x)
    probe = LinearProbe(encoder.channels, encoder.strides, num_classes=5)
    with torch.no_grad():
        from_cache = probe(feats, (64, 64))
    model = ProbeModel(encoder, probe)  # truncates the U-Net: weights after the last feature block go
    assert len(model.encoder.unet.output_blocks) == max(encoder.blocks) + 1
    assert not any(k.startswith("encoder.unet.out.") for k in model.state_dict())
    loaded = load_probe(save_probe(model, tmp_path / "probe", PreprocessingConfig(image_size=64)))
    with torch.no_grad():
        direct = loaded.module(x)
    torch.testing.assert_close(direct, from_cache, atol=5e-2, rtol=1e-2)  # cache is fp16
    with torch.no_grad():
        torch.testing.assert_close(direct, model(x))
    with pytest.raises(ConfigError, match="probe expects"):
        ProbeModel(encoder, LinearProbe((1, 2), (1, 2), 5))
