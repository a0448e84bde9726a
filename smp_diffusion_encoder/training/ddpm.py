"""The DDPM pretraining step: ``L_simple`` (epsilon MSE), plus ``lambda * L_vlb`` when sigma is learned.

The diffusion arithmetic (forward noising, posterior, variational bound terms) is
:class:`~smp_diffusion_encoder.diffusion.gaussian.GaussianDiffusion`'s; this module only draws the noise and
combines the losses.

For a batch ``x0 (B, C, H, W)`` in ``[-1, 1]``: ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``,
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` and ``L_simple = mean ||eps - eps_theta(x_t, t)||^2``
(Ho et al. 2020).

Learned sigma (the model outputs ``2C`` channels ``[eps, v]``, as ADM): the hybrid loss of Nichol & Dhariwal
(2021, improved DDPM), exactly as guided-diffusion computes it. The variance is
``log Sigma = f log beta_t + (1 - f) log beta~_t`` with ``f = (v + 1) / 2``; ``L_t`` is
``KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))`` for ``t > 0`` and the discretized Gaussian decoder NLL
(256 bins on ``[-1, 1]``) for ``t = 0``, in bits per dimension, with the mean's gradient stopped so that
``L_vlb`` trains only ``v``. With uniform ``t``, ``L_vlb = T * E_t[L_t]``, so the loss is
``L_simple + lambda * T * L_t`` with ``lambda = 0.001`` (for ``T = 1000`` this is guided-diffusion's
``mse + vb``). ``vlb_weight=0`` trains only the eps half and leaves ``v`` untouched.

Randomness: sample ``k`` of the training stream (its stream position, see
:mod:`~smp_diffusion_encoder.training.sampler`) gets ``t`` and ``eps`` from a generator seeded with
``(seed, k)``. A run therefore draws the same noise whatever its world size and however often it is
interrupted and resumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion


def sample_noise(positions: torch.Tensor, shape: tuple[int, ...], num_timesteps: int,
                 seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(t (B,) int64, eps (B, *shape) float32)`` on the CPU, a pure function of ``(seed, position)``."""
    ts, noises = [], []
    for pos in positions.tolist():
        key = int(np.random.SeedSequence([seed, int(pos)]).generate_state(1, np.uint64)[0] >> 1)
        g = torch.Generator().manual_seed(key)
        ts.append(torch.randint(num_timesteps, (1,), generator=g))
        noises.append(torch.randn(shape, generator=g))
    return torch.cat(ts), torch.stack(noises)


@dataclass
class DDPMStep:
    """``step(model, (x0, positions)) -> (loss, metrics)`` for :class:`~smp_diffusion_encoder.training.loop.Trainer`.

    Args:
        diffusion: the process (schedule, all ``T`` steps) the model is trained against.
        seed: noise seed (see the module docstring).
        vlb_weight: ``lambda`` of the hybrid loss, used when the model outputs ``2C`` channels.
        min_snr_gamma: ``None`` (default): every timestep's epsilon MSE weighs the same (``L_simple``).
            A number ``gamma``: min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via
            Min-SNR Weighting Strategy"), for epsilon prediction ``w_t = min(SNR_t, gamma) / SNR_t`` with
            ``SNR_t = abar_t / (1 - abar_t)``: the many nearly noise-free steps stop dominating the gradient.

    Metrics: ``mse`` (unweighted) and, with learned sigma, ``vb`` (``L_t`` in bits/dim).

    Example:
        >>> from smp_diffusion_encoder.diffusion import NoiseSchedule
        >>> from smp_diffusion_encoder.models import DiffusionUNet
        >>> step = DDPMStep(GaussianDiffusion(NoiseSchedule("linear")))
        >>> loss, m = step(DiffusionUNet("tiny"), (torch.zeros(2, 1, 64, 64), torch.arange(2)))  # doctest: +SKIP
    """

    diffusion: GaussianDiffusion
    seed: int = 0
    vlb_weight: float = 0.001
    min_snr_gamma: float | None = None

    def __call__(self, model: nn.Module,
                 batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, positions = batch
        d = self.diffusion
        t, noise = sample_noise(positions.cpu(), tuple(x0.shape[1:]), d.num_steps, self.seed)
        t, noise = t.to(x0.device, non_blocking=True), noise.to(x0.device, non_blocking=True)
        x_t = d.q_sample(x0, t, noise).contiguous(memory_format=torch.channels_last)
        out = model(x_t, t).float()
        c = x0.shape[1]
        eps = out[:, :c]
        per_sample = ((noise - eps) ** 2).flatten(1).mean(1)
        mse = per_sample.mean()
        if self.min_snr_gamma is None:
            simple = mse
        else:
            snr = d.at("snr", t)
            simple = (per_sample * snr.clamp(max=self.min_snr_gamma) / snr).mean()
        if out.shape[1] == c or self.vlb_weight == 0:
            return simple, {"mse": mse.detach()}
        vb = d.vlb_terms(x0.float(), x_t.float(), t, eps.detach(), out[:, c:2 * c]).mean()
        loss = simple + self.vlb_weight * d.num_steps * vb
        return loss, {"mse": mse.detach(), "vb": vb.detach()}
