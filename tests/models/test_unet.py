import pytest
import torch

from smp_diffusion_encoder.models import DiffusionUNet, get_preset


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    net = DiffusionUNet("tiny").eval()
    # zero-initialised output convolutions make a fresh net trivial; randomise so tests can fail
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net


def test_forward_shape_and_timestep_dependence(net):
    x = torch.randn(2, 1, 64, 64)
    out_a = net(x, torch.tensor([10, 10]))
    out_b = net(x, torch.tensor([900, 900]))
    assert out_a.shape == (2, get_preset("tiny").out_channels, 64, 64)
    assert not torch.allclose(out_a, out_b)


def test_learned_sigma_doubles_output_channels():
    cfg = get_preset("tiny").replace(learn_sigma=True)
    assert DiffusionUNet(cfg)(torch.zeros(1, 1, 64, 64), torch.tensor([1])).shape[1] == 2


def test_non_square_inputs_and_bad_sizes(net):
    assert net(torch.randn(1, 1, 64, 96), torch.tensor([5])).shape[-2:] == (64, 96)
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.randn(1, 1, 48, 64), torch.tensor([5]))


def test_decoder_features_equal_hooked_activations_of_a_full_forward(net):
    x, t = torch.randn(2, 1, 64, 64), torch.tensor([50, 250])
    captured = {}
    hooks = [
        blk.register_forward_hook(lambda m, i, o, k=k: captured.__setitem__(k, o))
        for k, blk in enumerate(net.output_blocks)
    ]
    try:
        net(x, t)
    finally:
        for h in hooks:
            h.remove()
    feats = net.decoder_features(x, t, [1, 4, 7])
    assert sorted(feats) == [1, 4, 7]
    for k, f in feats.items():
        torch.testing.assert_close(f, captured[k])


def test_truncate_removes_unused_blocks_and_the_noise_head():
    net = DiffusionUNet("tiny")
    before = len(net.state_dict())
    net.truncate(5)
    assert len(net.output_blocks) == 6 and net.is_truncated
    assert len(net.state_dict()) < before
    assert 5 in net.decoder_features(torch.zeros(1, 1, 64, 64), torch.tensor([1]), [5])
    with pytest.raises(RuntimeError, match="truncated"):
        net(torch.zeros(1, 1, 64, 64), torch.tensor([1]))
    with pytest.raises(ValueError, match="removed by truncate"):
        net.decoder_features(torch.zeros(1, 1, 64, 64), torch.tensor([1]), [7])
