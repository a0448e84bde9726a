"""The DDPM step: eps MSE, hybrid loss terms (zero KL for a perfect model, stopped mean gradient), seeding."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models import DiffusionUNet, get_preset
from smp_diffusion_encoder.training.ddpm import DDPMStep, counter_noise, sample_noise


def test_noise_is_a_function_of_the_stream_position() -> None:
    t1, n1 = sample_noise(torch.tensor([5, 6, 7]), (1, 4, 4), 1000, seed=0)
    t2, n2 = sample_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=0)
    t3, n3 = sample_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=1)
    assert torch.equal(t1[2:], t2) and torch.equal(n1[2:], n2) and not torch.equal(n2, n3)
    assert not torch.equal(n1[0], n1[1]) and t1.dtype == torch.int64 and ((t1 >= 0) & (t1 < 1000)).all()


def test_device_noise_is_a_function_of_seed_and_position_only() -> None:
    t1, n1 = counter_noise(torch.tensor([5, 6, 7, 2**40 + 7]), (1, 4, 4), 1000, seed=0)
    t2, n2 = counter_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=0)
    t3, n3 = counter_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=1)
    t4, n4 = counter_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=2**32)  # the seed's high half counts
    assert torch.equal(t1[2:3], t2) and torch.equal(n1[2:3], n2)  # whatever batch the sample is in
    assert not torch.equal(n2, n3) and not torch.equal(n2, n4) and not torch.equal(n1[2], n1[3])
    assert t1.dtype == torch.int64 and n1.dtype == torch.float32 and n1.shape == (4, 1, 4, 4)
    _, odd = counter_noise(torch.tensor([7]), (1, 3, 5), 1000, seed=0)  # an odd element count
    assert odd.shape == (1, 1, 3, 5) and torch.isfinite(odd).all()


def test_device_noise_is_standard_normal_and_timesteps_uniform() -> None:
    t, eps = counter_noise(torch.arange(1000, 1064), (1, 128, 128), 1000, seed=3)
    x = eps.flatten().double()  # 1M draws: standard errors 0.001 (mean), 0.0007 (std)
    assert abs(x.mean()) < 0.005 and abs(x.std() - 1) < 0.005 and abs(((x - x.mean()) ** 4).mean() - 3) < 0.03
    q = torch.tensor([0.001, 0.05, 0.5, 0.95, 0.999], dtype=torch.double)
    normal = math.sqrt(2) * torch.special.erfinv(2 * q - 1)
    assert (torch.quantile(x[:500_000], q) - normal).abs().max() < 0.03
    flat = eps.flatten(1).double()  # no correlation between neighbouring elements, pair halves or samples
    for a, b in ((flat[:, 1:], flat[:, :-1]), (flat[:, :8192], flat[:, 8192:]), (flat[1:], flat[:-1])):
        assert abs((a * b).mean()) < 0.005
    t, _ = counter_noise(torch.arange(100_000), (1,), 1000, seed=0)
    counts = torch.bincount(t, minlength=1000).double()
    assert t.min() >= 0 and t.max() <= 999 and ((counts - 100) ** 2 / 100).sum() < 1200  # chi2, 999 dof


def test_step_with_device_noise_skips_the_host_check_and_uses_counter_noise() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet("tiny")  # zero-initialized head: loss = E[eps^2] of the noise drawn
    batch = (torch.zeros(4, 1, 64, 64), torch.arange(4))
    loss, _ = DDPMStep(GaussianDiffusion(NoiseSchedule("cosine", 100)), noise_rng="device")(model, batch)
    _, noise = counter_noise(torch.arange(4), (1, 64, 64), 100, seed=0)
    assert torch.allclose(loss, (noise**2).mean())
    with pytest.raises(ConfigError, match="noise_rng"):
        DDPMStep(GaussianDiffusion(NoiseSchedule()), noise_rng="gpu")  # type: ignore[arg-type]


class HostReads(TorchDispatchMode):
    """Counts reads of tensor values back to Python (on a GPU each one waits for the device)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def test_a_step_with_device_noise_never_reads_values_back() -> None:
    model = DiffusionUNet("tiny")
    batch = (torch.zeros(2, 1, 64, 64), torch.arange(2))
    for noise_rng, host_reads in (("cpu", True), ("device", False)):
        with HostReads() as reads:
            loss, _ = DDPMStep(GaussianDiffusion(NoiseSchedule()), noise_rng=noise_rng)(model, batch)
            loss.backward()
        assert (reads.count > 0) == host_reads, (noise_rng, reads.count)


def test_eps_loss_is_mse_of_noise_prediction() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet("tiny")  # zero-initialized head: predicts eps = 0 -> loss = E[eps^2] ~ 1
    loss, metrics = DDPMStep(GaussianDiffusion(NoiseSchedule("cosine", 100)))(
        model, (torch.zeros(4, 1, 64, 64), torch.arange(4))
    )
    _, noise = sample_noise(torch.arange(4), (1, 64, 64), 100, seed=0)
    assert torch.allclose(loss, (noise**2).mean()) and set(metrics) == {"mse"}


def test_vlb_terms_vanish_for_the_true_posterior() -> None:
    d = GaussianDiffusion(NoiseSchedule("linear", 1000))
    x0 = torch.rand(3, 1, 8, 8) * 1.6 - 0.8
    t = torch.tensor([1, 400, 999])
    noise = torch.randn_like(x0)
    x_t = d.q_sample(x0, t, noise)
    v = -torch.ones_like(x0)  # f = 0: the model variance is the (clipped) posterior variance
    assert d.vlb_terms(x0, x_t, t, noise, v).abs().max() < 1e-3
    # An eps error d moves Ho et al.'s mean 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps) by
    # beta_t d / (sqrt(alpha_t) sqrt(1 - abar_t)): KL = shift^2 / (2 posterior variance), in bits.
    betas = torch.tensor(d.schedule.betas)
    abar = torch.cumprod(1 - betas, 0)
    b, a, ab, ab_prev = betas[t], 1 - betas[t], abar[t], abar[t - 1]
    shift = b * 0.5 / (a.sqrt() * (1 - ab).sqrt())
    expected = shift**2 / (2 * b * (1 - ab_prev) / (1 - ab)) / math.log(2)
    got = d.vlb_terms(x0, x_t, t, noise + 0.5, v)
    torch.testing.assert_close(got, expected.float(), rtol=1e-3, atol=1e-6)


def test_decoder_nll_and_kl_helpers() -> None:
    m, lv = torch.tensor([0.3]), torch.tensor([-2.0])
    assert normal_kl(m, lv, m, lv).item() == 0.0
    assert math.isclose(normal_kl(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.zeros(1)).item(), 0.5)
    ll = discretized_gaussian_log_likelihood(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([-8.0]))
    assert abs(ll.item()) < 1e-4  # a sharp Gaussian puts all mass in the right bin


def test_hybrid_loss_trains_variance_only_through_vlb() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet(get_preset("tiny").replace(learn_sigma=True))
    head = model.out[-1]
    torch.nn.init.normal_(head.weight, std=0.01)
    step = DDPMStep(GaussianDiffusion(NoiseSchedule("linear")), vlb_weight=0.001)
    batch = (torch.rand(2, 1, 64, 64) * 2 - 1, torch.arange(2))
    loss, metrics = step(model, batch)
    assert set(metrics) == {"mse", "vb"} and torch.isfinite(loss)
    assert torch.allclose(loss, metrics["mse"] + 0.001 * 1000 * metrics["vb"])
    hybrid = torch.autograd.grad(loss, head.weight)[0]
    simple = torch.autograd.grad(
        DDPMStep(GaussianDiffusion(NoiseSchedule("linear")), vlb_weight=0.0)(model, batch)[0], head.weight
    )[0]
    assert torch.allclose(hybrid[:1], simple[:1], atol=1e-7)  # L_vlb leaves the eps channel's gradient alone
    assert simple[1:].abs().max() == 0 and hybrid[1:].abs().max() > 0  # and alone trains the variance channel


def test_min_snr_weighting_scales_each_sample_by_min_snr_gamma_over_snr() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet("tiny")  # predicts eps = 0: per-sample loss = mean(eps^2)
    d = GaussianDiffusion(NoiseSchedule("linear", 1000))
    t_all, _ = sample_noise(torch.arange(400), (1, 1, 1), 1000, seed=0)
    low = int(torch.nonzero(t_all < 50)[0])  # a nearly noise-free step (SNR > 5) among the samples
    positions = torch.tensor([low, 1, 2, 3])
    batch = (torch.zeros(4, 1, 64, 64), positions)
    loss, metrics = DDPMStep(d, min_snr_gamma=5.0)(model, batch)
    t, noise = sample_noise(positions, (1, 64, 64), 1000, seed=0)
    abar = torch.tensor(d.schedule.alphas_cumprod)[t]
    snr = abar / (1 - abar)
    expected = ((noise**2).flatten(1).mean(1) * snr.clamp(max=5.0) / snr).mean()
    torch.testing.assert_close(loss, expected.float(), rtol=1e-5, atol=0)
    torch.testing.assert_close(metrics["mse"], (noise**2).mean(), rtol=1e-5, atol=0)  # logged unweighted
    assert loss < metrics["mse"]  # low-noise steps (SNR > 5) are down-weighted
