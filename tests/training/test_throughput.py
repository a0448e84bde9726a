"""FLOP counting and step timing: exact for a linear layer, the U-Net's count grows with the pixels, no side effects."""

from __future__ import annotations

import torch
from torch import nn

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.models.unet import DiffusionUNet
from smp_diffusion_encoder.training.ddpm import DDPMStep
from smp_diffusion_encoder.training.throughput import time_train_step, train_flops, unet_flops_per_sample


def squared(model: nn.Module, batch):
    return model(batch[0]).pow(2).mean(), {}


def test_train_flops_count_forward_and_backward_matrix_products() -> None:
    model = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    # forward 2*2*4*3; backward the weight's gradient, as much again (the data needs no gradient) ...
    assert train_flops(model, squared, (x,)) == 2 * 2 * 2 * 4 * 3
    # ... and as much once more for an input that needs one (a layer inside a network)
    assert train_flops(model, squared, (x.requires_grad_(),)) == 3 * 2 * 2 * 4 * 3
    assert all(p.grad is None for p in model.parameters())


def test_unet_flops_scale_with_pixels_and_leave_weights_and_rng_alone() -> None:
    torch.manual_seed(0)
    model = DiffusionUNet("tiny")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    step = DDPMStep(GaussianDiffusion(NoiseSchedule()))
    small, big = unet_flops_per_sample(model, step), unet_flops_per_sample(model, step, 128)
    assert 3.5 < big / small < 4.5  # 4x the pixels; attention grows faster, the time embedding not at all
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_time_train_step_reports_the_batch_and_its_rate() -> None:
    model = nn.Linear(4, 3)
    timing = time_train_step(
        model,
        squared,
        (torch.randn(8, 4),),
        torch.optim.SGD(model.parameters(), lr=0.1),
        precision="fp32",
        warmup=1,
        repeats=2,
    )
    assert timing.batch_size == 8 and timing.step_s > 0 and timing.first_step_s > 0
    assert timing.images_per_s == 8 / timing.step_s and timing.peak_memory_gib is None
