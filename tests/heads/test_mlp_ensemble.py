"""MLP ensemble: architecture, majority vote, uncertainty, chunked full-image prediction."""

import math

import pytest
import torch
import torch.nn.functional as F

from smp_diffusion_encoder.heads import MLPEnsemble, sample_pixels, upsample_rows
from smp_diffusion_encoder.heads._bilinear import interp_matrix


def _maps(b=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, 6, size, size, generator=g), torch.randn(b, 10, size // 4, size // 4, generator=g)]


def _dense(maps, size):
    return torch.cat([F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps], dim=1)


def test_member_architecture_is_baranchuks():
    ens = MLPEnsemble(in_features=8448, num_classes=14)
    assert ens.num_models == 10
    kinds = [type(m).__name__ for m in ens.members[0]]
    assert kinds == ["Linear", "ReLU", "BatchNorm1d", "Linear", "ReLU", "BatchNorm1d", "Linear"]
    assert [m.out_features for m in ens.members[0] if isinstance(m, torch.nn.Linear)] == [128, 32, 14]
    assert ens(torch.randn(5, 8448)).shape == (10, 5, 14)


def test_majority_vote_and_vote_entropy():
    ens = MLPEnsemble(in_features=3, num_classes=3, num_models=4).eval()
    with torch.no_grad():  # member k predicts class votes[k] whatever the input
        votes = [2, 2, 1, 0]
        for m, v in zip(ens.members, votes):
            m[-1].weight.zero_()
            m[-1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(v), 3).float() * 10)
    out = ens.vote(torch.randn(7, 3))
    assert out.labels.tolist() == [2] * 7
    expected = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    torch.testing.assert_close(out.uncertainty, torch.full((7,), expected))
    torch.testing.assert_close(out.probabilities.sum(1), torch.ones(7))
    with torch.no_grad():
        ens.members[2][-1].bias.copy_(ens.members[3][-1].bias)  # 2 votes for 2, 2 for 0: tie -> smallest id
    assert ens.vote(torch.randn(3, 3)).labels.tolist() == [0, 0, 0]
    agree = MLPEnsemble(in_features=3, num_classes=3, num_models=1).eval().vote(torch.randn(4, 3))
    assert torch.all(agree.uncertainty == 0)
    mean = ens.vote(torch.randn(4, 3), uncertainty="mean").uncertainty
    assert torch.all(mean > 0)


def test_interp_matrix_and_band_upsampling_match_interpolate():
    for n_in, n_out in [(4, 16), (5, 13), (16, 16), (3, 64)]:
        v = torch.randn(1, 1, n_in, 1)
        ref = F.interpolate(v, size=(n_out, 1), mode="bilinear", align_corners=False)[0, 0, :, 0]
        torch.testing.assert_close(interp_matrix(n_in, n_out) @ v[0, 0, :, 0], ref)
    f = torch.randn(2, 3, 5, 7)
    full = F.interpolate(f, size=(20, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(upsample_rows(f, (20, 28), slice(3, 11)), full[:, :, 3:11], atol=1e-5, rtol=1e-5)


def test_sample_pixels_matches_dense_stack():
    maps = _maps()
    dense = _dense(maps, (16, 16))
    b, y, x = torch.tensor([0, 1, 1, 0]), torch.tensor([0, 15, 7, 3]), torch.tensor([15, 0, 8, 3])
    torch.testing.assert_close(sample_pixels(maps, (16, 16), b, y, x), dense[b, :, y, x], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("chunk", [1, 40, 10_000])
def test_predict_map_equals_dense_per_pixel_vote(chunk):
    torch.manual_seed(0)
    ens = MLPEnsemble(in_features=16, num_classes=4, num_models=3).eval()
    maps = _maps()
    out = ens.predict_map(maps, (16, 16), chunk=chunk)
    dense = _dense(maps, (16, 16))  # (2, 16, 16, 16)
    ref = ens.vote(dense.permute(0, 2, 3, 1).reshape(-1, 16))
    assert out.labels.shape == (2, 16, 16) and out.probabilities.shape == (2, 4, 16, 16)
    assert torch.equal(out.labels.flatten(), ref.labels)
    torch.testing.assert_close(out.uncertainty.flatten(), ref.uncertainty, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        out.probabilities.permute(0, 2, 3, 1).reshape(-1, 4), ref.probabilities, atol=1e-5, rtol=1e-5
    )
