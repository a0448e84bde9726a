"""Samplers against oracle noise predictors whose answer is known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smp_diffusion_encoder.diffusion import NoiseSchedule
from smp_diffusion_encoder.diffusion.gaussian import respaced_timesteps
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.generation.config import SampleConfig
from smp_diffusion_encoder.generation.sampling import sample, sample_batch
from smp_diffusion_encoder.models import DiffusionUNet

SCHED = NoiseSchedule("linear", 100)


class GaussianOracle(torch.nn.Module):
    """Exact ``E[eps | x_t]`` when every pixel of the data is i.i.d. ``N(mu, s^2)`` (``s = 0``: a constant).

    ``x_t ~ N(sqrt(abar) mu, abar s^2 + 1 - abar)`` so ``E[eps | x_t] = sqrt(1-abar) (x_t - sqrt(abar) mu) /
    (abar s^2 + 1 - abar)``. With ``v`` set, it also returns a constant variance input (2C channels).
    """

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float = 0.0, v: float | None = None) -> None:
        super().__init__()
        self.abar = torch.tensor(schedule.alphas_cumprod, dtype=torch.float64)
        self.mu, self.s, self.v = mu, s, v

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = self.abar[t].view(-1, 1, 1, 1)
        eps = ((1 - a).sqrt() * (x.double() - a.sqrt() * self.mu) / (a * self.s**2 + 1 - a)).float()
        return eps if self.v is None else torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


def test_respacing_is_even_and_keeps_both_ends() -> None:
    assert respaced_timesteps(1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert respaced_timesteps(10, 10).tolist() == list(range(10))
    with pytest.raises(ConfigError, match="steps must be in 1..10"):
        respaced_timesteps(10, 11)


@pytest.mark.parametrize(("sampler", "steps"), [("ddim", 10), ("ddim", 100), ("ddpm", 100), ("ddpm", 20)])
def test_constant_data_is_recovered(sampler: str, steps: int) -> None:
    oracle = GaussianOracle(SCHED, mu=0.3)
    x = sample_batch(
        oracle,
        SCHED,
        (4, 1, 8, 8),
        sampler=sampler,
        steps=steps,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(x, torch.full_like(x, 0.3), atol=1e-4, rtol=0)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_reproduces_a_gaussian_data_distribution(variance: str) -> None:
    # all T = 1000 steps: both fixed variances give the data distribution for an exact eps (Ho et al. 2020);
    # with T = 100 the discretization bias is ~10% of the std (fixed_small 0.27 for 0.3).
    sched = NoiseSchedule("linear", 1000)
    x = sample_batch(
        GaussianOracle(sched, mu=0.2, s=0.3),
        sched,
        (16, 1, 32, 32),
        sampler="ddpm",
        variance=variance,
        clip_denoised=False,  # type: ignore[arg-type]
        generator=torch.Generator().manual_seed(1),
    )
    assert abs(x.mean().item() - 0.2) < 0.01  # standard error 0.0023
    assert abs(x.std().item() - 0.3) < 0.01


def test_ddim_eta0_maps_noise_to_the_gaussian_data_distribution() -> None:
    # the probability-flow ODE of Gaussian data is affine, (x_t/sqrt(abar) - mu) / sqrt(s^2 + (1-abar)/abar) is
    # constant along it; DDIM is its Euler scheme, accurate with many steps and contracting with few
    sched = NoiseSchedule("linear", 1000)
    oracle = GaussianOracle(sched, mu=-0.1, s=0.3)
    stds = []
    for steps in (20, 500):
        x = sample_batch(
            oracle,
            sched,
            (16, 1, 32, 32),
            sampler="ddim",
            steps=steps,
            eta=0.0,
            clip_denoised=False,
            generator=torch.Generator().manual_seed(2),
        )
        assert abs(x.mean().item() + 0.1) < 0.01
        stds.append(x.std().item())
    assert abs(stds[1] - 0.3) < 0.01 and stds[0] < stds[1]


def test_ddim_eta1_with_all_steps_is_ddpm_with_posterior_variance() -> None:
    oracle = GaussianOracle(SCHED, mu=0.1, s=0.5)
    kw = dict(clip_denoised=True)
    ddim = sample_batch(
        oracle,
        SCHED,
        (2, 1, 8, 8),
        sampler="ddim",
        steps=100,
        eta=1.0,
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    ddpm = sample_batch(
        oracle,
        SCHED,
        (2, 1, 8, 8),
        sampler="ddpm",
        variance="fixed_small",
        generator=torch.Generator().manual_seed(3),
        **kw,
    )
    torch.testing.assert_close(ddim, ddpm, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("v", "fixed"), [(-1.0, "fixed_small"), (1.0, "fixed_large")])
def test_learned_variance_interpolates_between_the_fixed_ones(v: float, fixed: str) -> None:
    learned = sample_batch(
        GaussianOracle(SCHED, 0.0, 0.5, v=v),
        SCHED,
        (2, 1, 8, 8),
        sampler="ddpm",
        steps=20,
        variance="learned",
        generator=torch.Generator().manual_seed(4),
    )
    ref = sample_batch(
        GaussianOracle(SCHED, 0.0, 0.5),
        SCHED,
        (2, 1, 8, 8),
        sampler="ddpm",
        steps=20,
        variance=fixed,
        generator=torch.Generator().manual_seed(4),
    )  # type: ignore[arg-type]
    torch.testing.assert_close(learned, ref, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="2C output channels"):
        sample_batch(GaussianOracle(SCHED, 0.0), SCHED, (1, 1, 8, 8), sampler="ddpm", steps=2, variance="learned")


def test_unet_samples_have_the_right_shape_and_depend_only_on_the_seed() -> None:
    torch.manual_seed(0)
    net = DiffusionUNet(DiffusionUNet("tiny").config.replace(image_size=32, learn_sigma=True)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sched = NoiseSchedule("linear", 50)

    def run(n: int, sampler: str, seed: int) -> torch.Tensor:
        config = SampleConfig(num_samples=n, batch_size=2, sampler=sampler, steps=3, seed=seed)  # type: ignore[arg-type]
        return sample(net, sched, config, progress=False)

    a, b, c = run(3, "ddim", 7), run(3, "ddim", 7), run(3, "ddim", 8)
    d = run(2, "ddpm", 7)  # learned variance
    assert a.shape == (3, 1, 32, 32) and d.shape == (2, 1, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0 and np.isfinite(d.numpy()).all()
