"""LinearProbe equals the naive upsample-concat-1x1-conv classifier, and converts to/from its layout."""

import pytest
import torch

from smp_diffusion_encoder.encoder import DiffusionFeatureEncoder, FeatureConfig
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.heads import LinearProbe, naive_linear_logits
from smp_diffusion_encoder.models import DiffusionUNet


def _maps(b=2, size=32, channels=(5, 7, 3), strides=(1, 2, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, size // s, size // s, generator=g) for c, s in zip(channels, strides)]


@pytest.mark.parametrize("out_size", [(32, 32), (40, 24)])
def test_probe_equals_naive_classifier(out_size):
    torch.manual_seed(0)
    feats = _maps()
    probe = LinearProbe((5, 7, 3), (1, 2, 8), num_classes=4)
    weight, bias = probe.dense_weight()
    assert weight.shape == (4, 15) and bias.shape == (4,)
    ours = probe(feats, out_size)
    ref = naive_linear_logits(feats, out_size, weight, bias)
    assert ours.shape == ref.shape == (2, 4, *out_size)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_gradients_equal_naive_classifier():
    feats = _maps(seed=1)
    probe = LinearProbe((5, 7, 3), (1, 2, 8), num_classes=3)
    weight, bias = (p.requires_grad_() for p in probe.dense_weight())
    target = torch.randint(0, 3, (2, 32, 32))
    torch.nn.functional.cross_entropy(probe(feats, (32, 32)), target).backward()
    torch.nn.functional.cross_entropy(naive_linear_logits(feats, (32, 32), weight, bias), target).backward()
    ours = torch.cat([c.weight.grad.flatten(1) for c in probe.convs], dim=1)
    torch.testing.assert_close(ours, weight.grad, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(probe.bias.grad, bias.grad, atol=1e-6, rtol=1e-4)


def test_dense_round_trip():
    g = torch.Generator().manual_seed(2)
    w, b = torch.randn(6, 15, 1, 1, generator=g), torch.randn(6, generator=g)
    probe = LinearProbe.from_dense(w, b, (5, 7, 3), (1, 2, 8))
    w2, b2 = probe.dense_weight()
    assert torch.equal(w2, w.flatten(1)) and torch.equal(b2, b)
    torch.testing.assert_close(
        probe(_maps(), (32, 32)), naive_linear_logits(_maps(), (32, 32), w, b), atol=1e-5, rtol=1e-5
    )
    with pytest.raises(ConfigError, match="K=6, D=15"):
        probe.load_dense(torch.zeros(6, 14), b)


def test_probe_on_real_encoder_features_in_fp16():
    enc = DiffusionFeatureEncoder(DiffusionUNet("tiny"), FeatureConfig(timesteps=(50, 150))).eval()
    with torch.no_grad():
        feats = enc(torch.rand(1, 1, 64, 64) * 2 - 1)
    probe = LinearProbe(enc.channels, enc.strides, num_classes=14)
    w, b = probe.dense_weight()
    ref = naive_linear_logits(feats, (64, 64), w, b)
    with torch.no_grad():
        torch.testing.assert_close(probe(feats, (64, 64)), ref, atol=1e-5, rtol=1e-5)
        half = probe([f.half() for f in feats], (64, 64))  # cached features are fp16
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ref, atol=2e-2, rtol=1e-2)


def test_wrong_number_of_maps_is_an_error():
    probe = LinearProbe((5, 7, 3), (1, 2, 8), num_classes=2)
    with pytest.raises(ConfigError, match="expects 3 feature maps"):
        probe(_maps()[:2], (32, 32))
    with pytest.raises(ConfigError, match="one stride per map"):
        LinearProbe((5, 7), (1,), 2)
