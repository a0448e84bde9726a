"""The shipped ``ddpm-ct`` weights give the features they gave when they were released.

The pinned numbers were computed with the code of release 7ea93bf (before the U-Net's blocks were made
TorchScript-compatible): a refactoring of the U-Net, the feature encoder or the state-dict layout that changes
what the shipped weights compute fails here. Tolerance: float32 summation order may differ between CPUs.
"""

from __future__ import annotations

import pytest
import timm
import torch

import smp_diffusion_encoder  # noqa: F401  (registers the timm names)
from smp_diffusion_encoder.encoder import FeaturePyramid
from smp_diffusion_encoder.registry import load_weights, resolve
from smp_diffusion_encoder.registry.records import packaged_weights

pytestmark = pytest.mark.skipif(packaged_weights("ddpm-ct") is None, reason="no default ddpm-ct weights shipped")

#: per map (strides 1..32): mean, mean |f|, f[1, :3, 1, 2] of the input below
PINNED = [
    (-0.2363822, 0.4559058, [0.342558, -0.622846, -0.08132]),
    (-0.1528755, 0.5320101, [-0.199038, 0.05108, 0.089554]),
    (-0.0474686, 0.4953232, [-0.404333, -0.106689, 0.160385]),
    (0.06493, 0.8661613, [0.100475, -0.593815, 1.135531]),
    (-0.1761163, 0.9645282, [-0.242968, 0.244786, -0.169589]),
    (-0.2819263, 0.6456507, [0.218081, -0.613829, -0.202879]),
]
SHAPES = [(2, 96, 64, 96), (2, 192, 32, 48), (2, 192, 16, 24), (2, 384, 8, 12), (2, 384, 4, 6), (2, 384, 2, 3)]


def _input() -> torch.Tensor:
    return torch.randn(2, 1, 64, 96, generator=torch.Generator().manual_seed(0)).clamp(-1, 1)


def _check(maps: list[torch.Tensor]) -> None:
    assert [tuple(f.shape) for f in maps] == SHAPES
    for f, (mean, abs_mean, values) in zip(maps, PINNED):
        torch.testing.assert_close(f.double().mean().item(), mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(f.double().abs().mean().item(), abs_mean, rtol=0, atol=1e-5)
        torch.testing.assert_close(f[1, :3, 1, 2], torch.tensor(values), rtol=0, atol=1e-4)


def test_shipped_weights_load_strictly_and_give_the_pinned_features() -> None:
    spec = resolve("ddpm-ct").spec
    encoder = FeaturePyramid(spec.unet, spec.features).eval()
    encoder.load_state_dict(load_weights("ddpm-ct", "ct"), strict=True)
    with torch.no_grad():
        _check(encoder.pyramid(_input()))


def test_timm_loads_the_shipped_weights_to_the_same_features() -> None:
    model = timm.create_model("ddpm_ct_unet", pretrained=True, features_only=True).eval()
    with torch.no_grad():
        _check(model(_input()))
