"""The DDPM step: eps MSE, hybrid loss terms (zero KL for a perfect model, stopped mean gradient), seeding."""

from __future__ import annotations

import math

import torch

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion, discretized_gaussian_log_likelihood, normal_kl
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.models import DiffusionUNet, get_preset
from smp_diffusion_encoder.training.ddpm import DDPMStep, sample_noise


def test_noise_is_a_function_of_the_stream_position() -> None:
    t1, n1 = sample_noise(torch.tensor([5, 6, 7]), (1, 4, 4), 1000, seed=0)
    t2, n2 = sample_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=0)
    t3, n3 = sample_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=1)
    assert torch.equal(t1[2:], t2) and torch.equal(n1[2:], n2) and not torch.equal(n2, n3)
    assert not torch.equal(n1[0], n1[1]) and t1.dtype == torch.int64 and ((t1 >= 0) & (t1 < 1000)).all()


def test_eps_loss_is_mse_of_noise_prediction() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet("tiny")  # zero-initialized head: predicts eps = 0 -> loss = E[eps^2] ~ 1
    loss, metrics = DDPMStep(GaussianDiffusion(NoiseSchedule("cosine", 100)))(model, (torch.zeros(4, 1, 64, 64), torch.arange(4)))
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
    simple = torch.autograd.grad(DDPMStep(GaussianDiffusion(NoiseSchedule("linear")), vlb_weight=0.0)(model, batch)[0], head.weight)[0]
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
