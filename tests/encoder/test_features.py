import pytest
import torch

from smp_diffusion_encoder.diffusion import NoiseSchedule
from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
from smp_diffusion_encoder.encoder import DiffusionFeatureEncoder, FeatureConfig, FeaturePyramid, default_blocks
from smp_diffusion_encoder.encoder.features import NOISE_FIELD_SIZE
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models import PRESETS


def test_default_blocks_give_one_block_per_stride():
    for cfg in PRESETS.values():
        strides = [cfg.decoder_block_stride(b) for b in default_blocks(cfg)]
        assert sorted(strides) == [2**i for i in range(cfg.num_levels)]
    # for the 256 ADM the defaults include Baranchuk's upsampling blocks 5 and 8
    assert {5, 8} <= set(default_blocks(PRESETS["adm-256"]))


def test_shapes_channels_and_strides(tiny_unet):
    enc = DiffusionFeatureEncoder(tiny_unet, FeatureConfig(timesteps=(50, 150, 250)))
    feats = enc(torch.randn(2, 1, 64, 96))
    assert enc.strides == (1, 2, 4, 8, 16, 32)
    for f, s, c in zip(feats, enc.strides, enc.channels):
        assert f.shape == (2, c, 64 // s, 96 // s)
    cfg = tiny_unet.config
    by_stride = sorted(enc.blocks, key=cfg.decoder_block_stride)
    assert enc.channels == tuple(3 * cfg.decoder_block_channels(b) for b in by_stride)


def test_same_input_same_features_and_seed_matters(tiny_unet):
    x = torch.randn(2, 1, 64, 64)
    a = DiffusionFeatureEncoder(tiny_unet, FeatureConfig(noise_seed=3))
    b = DiffusionFeatureEncoder(tiny_unet, FeatureConfig(noise_seed=3))
    c = DiffusionFeatureEncoder(tiny_unet, FeatureConfig(noise_seed=4))
    fa, fb, fc = a(x), b(x), c(x)
    for u, v in zip(fa, a(x)):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    for u, v in zip(fa, fb):
        torch.testing.assert_close(u, v, rtol=0, atol=0)
    assert not torch.allclose(fa[0], fc[0])


def test_batched_timesteps_equal_one_forward_per_timestep(tiny_unet):
    """The batched extraction equals the reference recipe: q_sample with the fixed noise, one forward per t."""
    fc = FeatureConfig(timesteps=(50, 150, 250), blocks=(3, 5, 7))
    enc = DiffusionFeatureEncoder(tiny_unet, fc)
    x = torch.randn(2, 1, 64, 64)
    feats = enc(x)  # strides 8 (block 3), 4 (block 5), 2 (block 7), ascending: 2, 4, 8
    assert enc.strides == (2, 4, 8)
    noise = enc.noise(64, 64)[0:1].expand_as(x)
    sched = GaussianDiffusion(NoiseSchedule())
    per_t = []
    for t in fc.timesteps:
        tt = torch.full((2,), t)
        per_t.append(tiny_unet.decoder_features(sched.q_sample(x, tt, noise), tt, [3, 5, 7]))
    expected = {7: 0, 5: 1, 3: 2}
    for block, idx in expected.items():
        ref = torch.cat([acts[block] for acts in per_t], dim=1)  # timestep-major channel layout
        torch.testing.assert_close(feats[idx], ref, rtol=1e-4, atol=1e-5)


def test_several_noise_draws_are_averaged(tiny_unet):
    x = torch.randn(1, 1, 64, 64)
    enc = DiffusionFeatureEncoder(tiny_unet, FeatureConfig(timesteps=(100,), blocks=(9,), num_noise=3))
    (avg,) = enc(x)
    sched, t = GaussianDiffusion(NoiseSchedule()), torch.tensor([100])
    draws = [
        tiny_unet.decoder_features(sched.q_sample(x, t, enc.noise(64, 64)[k : k + 1]), t, [9])[9] for k in range(3)
    ]
    torch.testing.assert_close(avg, torch.stack(draws).mean(0), rtol=1e-4, atol=1e-5)


def test_noise_is_shared_across_channels_and_tiles_beyond_the_field(tiny_unet):
    enc = DiffusionFeatureEncoder(tiny_unet)
    n = enc.noise(NOISE_FIELD_SIZE + 64, 32)
    assert n.shape == (1, 1, NOISE_FIELD_SIZE + 64, 32)
    torch.testing.assert_close(n[:, :, NOISE_FIELD_SIZE:], n[:, :, :64])
    torch.testing.assert_close(enc.noise(64, 64), enc.noise_field[:, :, :64, :64])


def test_gradients_reach_the_unet(tiny_unet):
    enc = DiffusionFeatureEncoder(tiny_unet)
    sum(f.mean() for f in enc(torch.randn(1, 1, 64, 64))).backward()
    assert tiny_unet.input_blocks[0][0].weight.grad is not None


def test_feature_config_validation():
    with pytest.raises(ConfigError, match="1000"):
        FeatureConfig(timesteps=(1000,))
    with pytest.raises(ConfigError, match="empty"):
        FeatureConfig(timesteps=())
    with pytest.raises(ConfigError, match="bogus"):
        FeatureConfig.from_dict({"bogus": 1})
    assert FeatureConfig.from_dict(FeatureConfig(blocks=(5, 1)).to_dict()) == FeatureConfig(blocks=(1, 5))


def test_pyramid_requires_every_stride_and_truncates_the_unet():
    with pytest.raises(ConfigError, match="every stride"):
        FeaturePyramid("tiny", FeatureConfig(blocks=(3, 5)))
    pyr = FeaturePyramid("tiny")
    assert len(pyr.unet.output_blocks) == max(pyr.blocks) + 1 and pyr.unet.is_truncated
    assert all(k.startswith("unet.") for k in pyr.state_dict())


def test_in_channel_adaptation_keeps_grey_images_identical():
    one = FeaturePyramid("tiny")
    torch.manual_seed(0)
    from tests.encoder.conftest import randomize_

    randomize_(one)
    three = FeaturePyramid("tiny")
    three.load_state_dict(one.state_dict())
    three.adapt_in_channels(3)
    x = torch.randn(1, 1, 64, 64)
    for a, b in zip(one.pyramid(x), three.pyramid(x.repeat(1, 3, 1, 1))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_channels_last_layout_does_not_change_the_features(tiny_unet):
    import copy

    x = torch.randn(2, 1, 64, 64)
    nhwc = DiffusionFeatureEncoder(copy.deepcopy(tiny_unet), channels_last=True)
    nchw = DiffusionFeatureEncoder(copy.deepcopy(tiny_unet), channels_last=False)
    # parameters keep the standard layout (state dicts save with safetensors as they are); inputs go NHWC
    assert all(p.is_contiguous() for p in nhwc.parameters())
    for a, b in zip(nhwc(x), nchw(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
