"""The DDPM pretraining step: ``L_simple`` (epsilon MSE), plus ``lambda * L_vlb`` when sigma is learned.

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

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule


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


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """Elementwise ``KL(N(mean1, e^logvar1) || N(mean2, e^logvar2))`` in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def _approx_std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Elementwise log-likelihood (nats) of ``x`` in ``[-1, 1]`` under a Gaussian discretized to 256 bins."""
    centered = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = _approx_std_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
    cdf_min = _approx_std_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_cdf_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_cdf_delta))


@dataclass
class DDPMStep:
    """``step(model, (x0, positions)) -> (loss, metrics)`` for :class:`~smp_diffusion_encoder.training.loop.Trainer`.

    Args:
        schedule: the noise schedule (name + ``T``) the model is trained against.
        seed: noise seed (see the module docstring).
        vlb_weight: ``lambda`` of the hybrid loss, used when the model outputs ``2C`` channels.
        min_snr_gamma: ``None`` (default): every timestep's epsilon MSE weighs the same (``L_simple``).
            A number ``gamma``: min-SNR-gamma weighting (Hang et al. 2023, "Efficient Diffusion Training via
            Min-SNR Weighting Strategy"), for epsilon prediction ``w_t = min(SNR_t, gamma) / SNR_t`` with
            ``SNR_t = abar_t / (1 - abar_t)``: the many nearly noise-free steps stop dominating the gradient.

    Metrics: ``mse`` (unweighted) and, with learned sigma, ``vb`` (``L_t`` in bits/dim).

    Example:
        >>> step = DDPMStep(NoiseSchedule("linear"))
        >>> loss, m = step(DiffusionUNet("tiny"), (torch.zeros(2, 1, 64, 64), torch.arange(2)))  # doctest: +SKIP
    """

    schedule: NoiseSchedule
    seed: int = 0
    vlb_weight: float = 0.001
    min_snr_gamma: float | None = None
    _tables: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def tables(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Float32 per-timestep coefficient tables ``(T,)`` (computed in float64) on ``device``."""
        if not self._tables or next(iter(self._tables.values())).device != device:
            betas = self.schedule.betas
            abar = np.cumprod(1.0 - betas)
            abar_prev = np.append(1.0, abar[:-1])
            post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
            t = {
                "sqrt_recip_abar": np.sqrt(1.0 / abar), "sqrt_recipm1_abar": np.sqrt(1.0 / abar - 1.0),
                "post_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
                "post_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
                "post_logvar": np.log(np.append(post_var[1], post_var[1:])) if len(betas) > 1 else np.log(betas),
                "log_betas": np.log(betas),
                "snr": abar / (1.0 - abar),
            }
            self._tables = {k: torch.tensor(v, dtype=torch.float32, device=device) for k, v in t.items()}
        return self._tables

    def __call__(self, model: nn.Module,
                 batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        x0, positions = batch
        t, noise = sample_noise(positions.cpu(), tuple(x0.shape[1:]), self.schedule.num_timesteps, self.seed)
        t, noise = t.to(x0.device, non_blocking=True), noise.to(x0.device, non_blocking=True)
        x_t = self.schedule.q_sample(x0, t, noise).contiguous(memory_format=torch.channels_last)
        out = model(x_t, t).float()
        c = x0.shape[1]
        eps = out[:, :c]
        per_sample = ((noise - eps) ** 2).flatten(1).mean(1)
        mse = per_sample.mean()
        if self.min_snr_gamma is None:
            simple = mse
        else:
            snr = self.tables(x0.device)["snr"][t]
            simple = (per_sample * snr.clamp(max=self.min_snr_gamma) / snr).mean()
        if out.shape[1] == c or self.vlb_weight == 0:
            return simple, {"mse": mse.detach()}
        vb = self.vlb_terms(x0.float(), x_t.float(), t, eps.detach(), out[:, c:2 * c]).mean()
        loss = simple + self.vlb_weight * self.schedule.num_timesteps * vb
        return loss, {"mse": mse.detach(), "vb": vb.detach()}

    def vlb_terms(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
                  v: torch.Tensor) -> torch.Tensor:
        """``L_t`` per sample ``(B,)`` in bits/dim from predicted ``eps`` and variance logits ``v`` ``(B, C, H, W)``."""
        tab = self.tables(x0.device)

        def at(name: str) -> torch.Tensor:
            return tab[name][t].reshape(-1, *([1] * (x0.dim() - 1)))

        true_mean = at("post_coef1") * x0 + at("post_coef2") * x_t
        true_logvar = at("post_logvar")
        frac = (v + 1.0) / 2.0
        model_logvar = frac * at("log_betas") + (1.0 - frac) * at("post_logvar")
        pred_x0 = at("sqrt_recip_abar") * x_t - at("sqrt_recipm1_abar") * eps
        model_mean = at("post_coef1") * pred_x0 + at("post_coef2") * x_t
        kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
        nll = nll.flatten(1).mean(1) / math.log(2.0)
        return torch.where(t == 0, nll, kl)
