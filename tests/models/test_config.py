import json

import pytest
import torch

from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models import PRESETS, DiffusionUNet, UNetConfig, get_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_through_json(name):
    cfg = PRESETS[name]
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_adm256_matches_guided_diffusion_size():
    with torch.device("meta"):
        net = DiffusionUNet("adm-256")
    n = sum(p.numel() for p in net.parameters())
    # guided-diffusion's 256x256 unconditional ADM has ~552.8 M parameters (3 -> 1 input channel, 6 -> 2 output)
    assert 552.0e6 < n < 553.5e6


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_decoder_block_strides_and_channels_match_the_network(name):
    cfg = PRESETS[name]
    if name == "adm-256":
        pytest.skip("too large for CPU tests; same code path as the others")
    net = DiffusionUNet(cfg).eval()
    size = 2 * cfg.max_stride
    x = torch.zeros(1, 1, size, size)
    feats = net.decoder_features(x, torch.tensor([10]), range(cfg.num_decoder_blocks))
    for b, f in feats.items():
        assert f.shape[1] == cfg.decoder_block_channels(b)
        assert f.shape[-1] == size // cfg.decoder_block_stride(b)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(image_size=100), "multiple of the deepest stride"),
        (dict(norm_groups=7), "norm_groups=7"),
        (dict(attention_resolutions=(48,)), "attention resolution 48"),
        (dict(channel_mult=()), "channel_mult"),
    ],
)
def test_invalid_configs_are_rejected_with_the_bad_value(changes, message):
    with pytest.raises(ConfigError, match=message):
        get_preset("tiny").replace(**changes)


def test_unknown_keys_and_presets_are_named():
    with pytest.raises(ConfigError, match="bogus"):
        UNetConfig.from_dict({**get_preset("tiny").to_dict(), "bogus": 1})
    with pytest.raises(ConfigError, match="huge"):
        get_preset("huge")
    with pytest.raises(ConfigError, match="decoder block 99"):
        get_preset("tiny").decoder_block_stride(99)
