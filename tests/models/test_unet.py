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


#: sha256 of "key shape" lines of the state dict, computed at release 7ea93bf: weights on disk (packaged, Hub,
#: pretraining runs) refer to these names, so a refactoring of the blocks must not change them
STATE_DICT_LAYOUT = {
    "tiny": "2dca4dd844d0121462b571a1eb6a1932d41bb6e7274f1e0d8159f9c09cba6adb",
    "small": "c213636afeaddadec7294d9e3358bdd711dfb4c45d31669812d3513e87042bda",
}


@pytest.mark.parametrize("preset", sorted(STATE_DICT_LAYOUT))
def test_state_dict_layout_is_unchanged(preset):
    import hashlib

    with torch.device("meta"):
        sd = DiffusionUNet(preset).state_dict()
    text = "\n".join(f"{k} {tuple(v.shape)}" for k, v in sd.items())
    assert hashlib.sha256(text.encode()).hexdigest() == STATE_DICT_LAYOUT[preset]


def test_torchscript_gives_eager_outputs(net):
    """Blocks are chains of layers with one signature (x, emb): TorchScript compiles the U-Net as it is."""
    import warnings

    x, t = torch.randn(2, 1, 64, 64), torch.tensor([10, 500])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.*is deprecated", category=FutureWarning)
        scripted = torch.jit.script(net)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, t), net(x, t), rtol=0, atol=0)
        ours, eager = scripted.decoder_features(x, t, [1, 4, 7]), net.decoder_features(x, t, [1, 4, 7])
    assert sorted(ours) == [1, 4, 7]
    for k in eager:
        torch.testing.assert_close(ours[k], eager[k], rtol=0, atol=0)


def test_blocks_hold_only_timestep_layers():
    from smp_diffusion_encoder.models.layers import TimestepBlock, TimestepSequential

    net = DiffusionUNet("tiny")
    blocks = [*net.input_blocks, net.middle_block, *net.output_blocks]
    assert all(isinstance(layer, TimestepBlock) for block in blocks for layer in block)
    assert isinstance(net.input_blocks[0][0], torch.nn.Conv2d)  # still timm's `first_conv`
    with pytest.raises(TypeError, match="TimestepBlock"):
        TimestepSequential(torch.nn.Conv2d(1, 1, 3))
