"""How fast a training step runs: its FLOPs and its measured time (what a GPU run reports, not how it trains).

:func:`train_flops` counts one step's forward + backward FLOPs with ``torch.utils.flop_counter.FlopCounterMode``
(convolutions, matrix products and attention, the operations the hardware's peak rate refers to; elementwise
work such as normalization is not counted). :func:`unet_flops_per_sample` runs it on one sample on the
model's own device (the meta device would compute nothing, but its Python decompositions take seconds).
Achieved TFLOP/s are then ``flops_per_sample * images_per_s / 1e12`` (the
:class:`~smp_diffusion_encoder.training.loop.Trainer` logs them as ``tflop_s``).

:func:`time_train_step` times the step the loop runs (forward under autocast, backward, optimizer step) on a
throwaway model: a measurement for choosing settings (batch size, compilation), like
:func:`~smp_diffusion_encoder.training.precision.choose_precision`. Training itself always runs through the
Trainer.

Example:
    >>> from smp_diffusion_encoder.diffusion import NoiseSchedule
    >>> from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
    >>> from smp_diffusion_encoder.training.ddpm import DDPMStep
    >>> from smp_diffusion_encoder.models.unet import DiffusionUNet
    >>> step = DDPMStep(GaussianDiffusion(NoiseSchedule("linear")))
    >>> round(unet_flops_per_sample(DiffusionUNet("tiny"), step) / 1e9, 3)   # GFLOP per 64 px image, fwd + bwd
    0.286
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from smp_diffusion_encoder.models.unet import DiffusionUNet
from smp_diffusion_encoder.training.ddpm import DDPMStep

StepFn = Callable[[nn.Module, Any], tuple[torch.Tensor, Any]]


def train_flops(model: nn.Module, step: StepFn, batch: Any) -> int:
    """FLOPs of one forward + backward of ``step(model, batch)`` (see the module docstring); the gradients are
    cleared afterwards and no random generator is advanced (the weights do not change)."""
    device = next(model.parameters()).device
    with (
        torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        FlopCounterMode(display=False) as counter,
    ):
        loss, _ = step(model, batch)
        loss.backward()
    model.zero_grad(set_to_none=True)
    return int(counter.get_total_flops())


def unet_flops_per_sample(model: DiffusionUNet, step: DDPMStep, image_size: int | None = None) -> float:
    """Training FLOPs per image of ``model`` with ``step`` at ``image_size`` px (default: its preset's), counted
    on one sample (FLOPs grow linearly with the batch) on the model's device."""
    device = next(model.parameters()).device
    size = image_size or model.config.image_size
    x0 = torch.zeros(1, model.config.in_channels, size, size, device=device)
    return float(train_flops(model, step, (x0, torch.zeros(1, dtype=torch.long, device=device))))


@dataclass(frozen=True)
class StepTiming:
    """Measured seconds of training steps at one batch size.

    ``first_step_s``: the first step (compilation, cuDNN autotuning, allocator warm-up); ``step_s``: the
    mean of the timed steps, run back to back (synchronized only at both ends, as in training);
    ``peak_memory_gib``: the device's peak allocated memory (CUDA), else ``None``.
    """

    batch_size: int
    first_step_s: float
    step_s: float
    images_per_s: float
    peak_memory_gib: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(
    model: nn.Module,
    step: StepFn,
    batch: tuple[torch.Tensor, ...],
    optimizer: torch.optim.Optimizer,
    *,
    precision: Literal["fp32", "bf16"] = "bf16",
    warmup: int = 2,
    repeats: int = 5,
) -> StepTiming:
    """Time ``warmup`` then ``repeats`` training steps of ``model`` on ``batch`` (already on its device).

    The model's weights and the optimizer's state change: pass throwaway copies.
    """
    device = batch[0].device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def one() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss, _ = step(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    model.train()
    times = []
    for i in range(max(warmup, 1) + 1):
        _sync(device)
        tick = time.perf_counter()
        if i < max(warmup, 1):
            one()
        else:
            for _ in range(repeats):
                one()
        _sync(device)
        times.append(time.perf_counter() - tick)
    step_s = times[-1] / repeats
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return StepTiming(
        batch_size=int(batch[0].shape[0]),
        first_step_s=times[0],
        step_s=step_s,
        images_per_s=batch[0].shape[0] / step_s,
        peak_memory_gib=peak,
    )
