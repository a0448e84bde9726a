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
:mod:`~smp_diffusion_encoder.training.sampler`) gets ``t`` and ``eps`` as a pure function of ``(seed, k)``.
A run therefore draws the same noise whatever its world size and however often it is interrupted and
resumed. Two sources (``noise_rng``):

- ``"cpu"`` (:func:`sample_noise`): a torch CPU generator seeded with ``(seed, k)`` per sample, copied to the
  training device. The original source; on a GPU the per-sample host work (~75 ms per 256 samples of
  128 px on one 2-core-EPYC core) and the copy of a pageable tensor (which waits for the GPU) stall the step.
- ``"device"`` (:func:`counter_noise`): a counter-based hash of ``(seed, k, element)`` turned into Gaussians by
  Box-Muller, computed with integer tensor ops on the training device: no host work, no synchronization,
  the same values on every device up to float rounding of ``log``/``cos``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion
from smp_diffusion_encoder.errors import ConfigError

NoiseRNG = Literal["cpu", "device"]
_MASK32 = 0xFFFFFFFF


def sample_noise(
    positions: torch.Tensor, shape: tuple[int, ...], num_timesteps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(t (B,) int64, eps (B, *shape) float32)`` on the CPU, a pure function of ``(seed, position)``."""
    ts, noises = [], []
    for pos in positions.tolist():
        key = int(np.random.SeedSequence([seed, int(pos)]).generate_state(1, np.uint64)[0] >> 1)
        g = torch.Generator().manual_seed(key)
        ts.append(torch.randint(num_timesteps, (1,), generator=g))
        noises.append(torch.randn(shape, generator=g))
    return torch.cat(ts), torch.stack(noises)


def _hash32(x: torch.Tensor | int) -> Any:
    """A 32-bit integer hash (C. Wellons' hash-prospector "lowbias32" family, constants 0x21f0aaad and
    0x735a2d97) of values in ``[0, 2**32)`` held in int64 tensors (or Python ints). Both constants are below
    ``2**31``, so every product stays below ``2**63``: exact, without overflow, on any device."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK32
    return x ^ (x >> 15)


def counter_noise(
    positions: torch.Tensor, shape: tuple[int, ...], num_timesteps: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ``(t (B,) int64, eps (B, *shape) float32)`` on ``positions``' device, a pure function of
    ``(seed, position)`` computed without host work.

    Sample key ``key = H(H(pos_lo ^ H(seed)) ^ pos_hi)`` (``H`` = :func:`_hash32`, ``pos_lo``/``pos_hi`` the
    position's 32-bit halves); ``t = H(key ^ c_t) mod T``; element pair ``j`` of ``eps`` takes the uniforms
    ``u = (H(H(key ^ c_e) ^ H(c)) >> 8 + 0.5) / 2**24`` of counters ``c = j`` and ``c = j + n/2`` (24-bit,
    in ``(0, 1)``) and gives ``sqrt(-2 ln u1) cos(2 pi u2)`` and ``... sin(...)`` (Box-Muller): Gaussians
    truncated at about 5.8 standard deviations.

    Example:
        >>> t, eps = counter_noise(torch.tensor([0, 7]), (1, 4, 4), 1000, seed=0)
        >>> t.shape, eps.shape, eps.dtype
        (torch.Size([2]), torch.Size([2, 1, 4, 4]), torch.float32)
        >>> bool(torch.equal(counter_noise(torch.tensor([7]), (1, 4, 4), 1000, seed=0)[1][0], eps[1]))
        True
    """
    pos = positions.long()
    seed_key = _hash32((seed & _MASK32) ^ _hash32((seed >> 32) & _MASK32))
    key = _hash32(_hash32((pos & _MASK32) ^ seed_key) ^ ((pos >> 32) & _MASK32))  # (B,)
    t = _hash32(key ^ 0x243F6A88) % num_timesteps
    n = math.prod(shape)
    pairs = (n + 1) // 2
    counters = _hash32(torch.arange(2 * pairs, device=pos.device, dtype=torch.long))  # (2 * pairs,)
    bits = _hash32(_hash32(key ^ 0x85A308D3)[:, None] ^ counters[None])  # (B, 2 * pairs)
    u = ((bits >> 8).float() + 0.5) * 2.0**-24
    radius, angle = torch.sqrt(-2.0 * torch.log(u[:, :pairs])), (2.0 * math.pi) * u[:, pairs:]
    eps = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)[:, :n]
    return t, eps.reshape(pos.shape[0], *shape)


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

        noise_rng: where ``t`` and ``eps`` are drawn: ``"cpu"`` (:func:`sample_noise`, default) or
            ``"device"`` (:func:`counter_noise` on the batch's device; see the module docstring).

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
    noise_rng: NoiseRNG = "cpu"

    def __post_init__(self) -> None:
        if self.noise_rng not in ("cpu", "device"):
            raise ConfigError(f"noise_rng must be 'cpu' or 'device', got {self.noise_rng!r}")

    def __call__(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, positions = batch
        d = self.diffusion
        if self.noise_rng == "device":  # no host work and no synchronization: t is in range by construction
            t, noise = counter_noise(
                positions.to(x0.device, non_blocking=True), tuple(x0.shape[1:]), d.num_steps, self.seed
            )
            x_t = d.q_sample(x0, t, noise, check=False)
        else:
            t, noise = sample_noise(positions.cpu(), tuple(x0.shape[1:]), d.num_steps, self.seed)
            t, noise = t.to(x0.device, non_blocking=True), noise.to(x0.device, non_blocking=True)
            x_t = d.q_sample(x0, t, noise)
        x_t = x_t.contiguous(memory_format=torch.channels_last)
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
        vb = d.vlb_terms(x0.float(), x_t.float(), t, eps.detach(), out[:, c : 2 * c]).mean()
        loss = simple + self.vlb_weight * d.num_steps * vb
        return loss, {"mse": mse.detach(), "vb": vb.detach()}
