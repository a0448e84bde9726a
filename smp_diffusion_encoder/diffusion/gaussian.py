"""The Gaussian diffusion process on a schedule: forward noising, posterior, the model's reverse step, respacing.

One object holds all the arithmetic that training (:class:`~smp_diffusion_encoder.training.ddpm.DDPMStep`),
feature extraction and sampling (:mod:`~smp_diffusion_encoder.generation.sampling`) share, as
guided-diffusion's ``GaussianDiffusion`` (and its ``SpacedDiffusion``) do. Tables are computed in float64
from the schedule's ``alpha_bar`` and read as float32 tensors.

Indexing: a process runs over ``K`` steps ``k = 0 .. K-1``. Without respacing ``K = T`` and ``k`` is the
training timestep ``t``. A respaced process (:meth:`GaussianDiffusion.respaced`) runs on an evenly spaced
subsequence ``tau_0 < ... < tau_{K-1}`` of the ``T`` training steps, always holding ``0`` and ``T-1``
(:func:`respaced_timesteps`), with ``beta'_k = 1 - abar[tau_k] / abar[tau_{k-1}]``; the network is called
with the original timestep ``timesteps[k] = tau_k``.

Formulas (Ho et al. 2020; Nichol & Dhariwal 2021):

- forward: ``x_k = sqrt(abar_k) x_0 + sqrt(1 - abar_k) eps``;
- posterior ``q(x_{k-1} | x_k, x_0) = N(c1_k x_0 + c2_k x_k, beta~_k)`` with ``c1 = beta sqrt(abar_prev) /
  (1 - abar)``, ``c2 = (1 - abar_prev) sqrt(alpha) / (1 - abar)``, ``beta~ = beta (1 - abar_prev) / (1 - abar)``;
  ``log beta~`` is clipped at ``k = 0`` (it is 0 there) to ``log beta~_1``;
- learned variance: ``log Sigma = f log beta + (1 - f) log beta~`` with ``f = (v + 1) / 2``.

Example:
    >>> d = GaussianDiffusion(NoiseSchedule("linear", 1000))
    >>> x0 = torch.zeros(2, 1, 8, 8)
    >>> d.q_sample(x0, torch.tensor([0, 999]), torch.ones_like(x0)).shape
    torch.Size([2, 1, 8, 8])
    >>> d.respaced(50).timesteps[:3].tolist()
    [0, 20, 41]
"""

from __future__ import annotations

import math

import numpy as np
import torch

from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError


def respaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """``steps`` evenly spaced training timesteps, ascending, always holding ``0`` and ``T - 1``.

    Example:
        >>> respaced_timesteps(1000, 5).tolist()
        [0, 250, 500, 749, 999]
    """
    if not 1 <= steps <= num_timesteps:
        raise ConfigError(f"steps must be in 1..{num_timesteps} (the schedule's T), got {steps}")
    if steps == 1:
        return np.array([num_timesteps - 1], dtype=np.int64)
    ts = np.round(np.linspace(0, num_timesteps - 1, steps)).astype(np.int64)
    return np.unique(ts)  # rounding never collides for steps <= T, unique() only guards it


class GaussianDiffusion:
    """Diffusion arithmetic on ``schedule`` (all ``T`` steps, or a respaced subsequence of ``steps``)."""

    def __init__(self, schedule: NoiseSchedule, steps: int | None = None) -> None:
        self.schedule = schedule
        T = schedule.num_timesteps
        self.timesteps = np.arange(T, dtype=np.int64) if steps is None else respaced_timesteps(T, steps)
        abar = schedule.alphas_cumprod[self.timesteps]
        abar_prev = np.append(1.0, abar[:-1])
        betas = 1.0 - abar / abar_prev
        post_var = betas * (1.0 - abar_prev) / (1.0 - abar)
        first = post_var[1] if len(abar) > 1 else betas[0]  # beta~_0 = 0: guided-diffusion's clipping
        self.np_tables: dict[str, np.ndarray] = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": np.sqrt(abar),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - abar),
            "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / abar),
            "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / abar - 1.0),
            "posterior_variance": post_var,
            "posterior_log_variance": np.log(np.append(first, post_var[1:])),
            "posterior_mean_coef1": betas * np.sqrt(abar_prev) / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * np.sqrt(1.0 - betas) / (1.0 - abar),
            "log_betas": np.log(betas),
            "large_log_variance": np.log(np.append(first, betas[1:])),
            "snr": abar / (1.0 - abar),
        }
        self._tensors: dict[tuple[str, torch.device], torch.Tensor] = {}

    @property
    def num_steps(self) -> int:
        """``K``: the number of steps of this (possibly respaced) process."""
        return len(self.timesteps)

    def respaced(self, steps: int) -> GaussianDiffusion:
        """The process on ``steps`` evenly spaced training timesteps (see the module docstring)."""
        return GaussianDiffusion(self.schedule, steps)

    def at(self, name: str, k: torch.Tensor, ndim: int = 1) -> torch.Tensor:
        """Table ``name`` at step indices ``k`` ``(B,)`` as float32, shaped ``(B, 1, ..., 1)`` with ``ndim`` dims."""
        key = (name, k.device)
        if key not in self._tensors:
            self._tensors[key] = torch.tensor(self.np_tables[name], dtype=torch.float32, device=k.device)
        return self._tensors[key][k.long()].reshape(-1, *([1] * (ndim - 1)))

    def check_steps(self, k: torch.Tensor) -> None:
        """Raise :class:`ConfigError` listing the step indices outside ``0 .. K-1``."""
        if k.is_meta:
            return
        bad = (k < 0) | (k >= self.num_steps)
        if bad.any():
            values = sorted({int(i) for i in k[bad].tolist()})
            raise ConfigError(f"timesteps {values} are outside 0..{self.num_steps - 1}")

    # ----- forward process -----------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor, *, check: bool = True) -> torch.Tensor:
        """``x_k = sqrt(abar_k) x0 + sqrt(1 - abar_k) noise`` for per-sample ``k`` of shape ``(B,)``.

        ``check=False`` skips :meth:`check_steps`, which reads ``k`` back to the host (on a GPU a
        synchronization): for callers whose ``k`` is in range by construction, as the training step's.
        """
        k = k.to(x0.device)
        if check:
            self.check_steps(k)
        a = self.at("sqrt_alphas_cumprod", k, x0.dim()).to(x0.dtype)
        s = self.at("sqrt_one_minus_alphas_cumprod", k, x0.dim()).to(x0.dtype)
        return a * x0 + s * noise

    def coefficients(self, k: torch.Tensor | list[int] | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(abar_k), sqrt(1 - abar_k))`` float32, shaped like ``k`` (a list gives CPU tensors)."""
        k = k if isinstance(k, torch.Tensor) else torch.as_tensor(list(k), dtype=torch.long)
        self.check_steps(k)
        return (
            self.at("sqrt_alphas_cumprod", k).reshape(k.shape),
            self.at("sqrt_one_minus_alphas_cumprod", k).reshape(k.shape),
        )

    # ----- posterior and reverse step ------------------------------------------------------------
    def predict_x0(self, x_t: torch.Tensor, k: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x0 = (x_k - sqrt(1 - abar_k) eps) / sqrt(abar_k)``."""
        return (
            self.at("sqrt_recip_alphas_cumprod", k, x_t.dim()) * x_t
            - self.at("sqrt_recipm1_alphas_cumprod", k, x_t.dim()) * eps
        )

    def predict_eps(self, x_t: torch.Tensor, k: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The ``eps`` that :meth:`predict_x0` maps to ``x0`` (used after clipping ``x0``)."""
        return (self.at("sqrt_recip_alphas_cumprod", k, x_t.dim()) * x_t - x0) / self.at(
            "sqrt_recipm1_alphas_cumprod", k, x_t.dim()
        )

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and (clipped) log-variance of ``q(x_{k-1} | x_k, x0)``; the log-variance is ``(B, 1, ..., 1)``."""
        n = x_t.dim()
        mean = self.at("posterior_mean_coef1", k, n) * x0 + self.at("posterior_mean_coef2", k, n) * x_t
        return mean, self.at("posterior_log_variance", k, n)

    def learned_log_variance(self, v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """``f log beta_k + (1 - f) log beta~_k`` with ``f = (v + 1) / 2`` (improved DDPM's learned range)."""
        frac = (v + 1.0) / 2.0
        n = v.dim()
        return frac * self.at("log_betas", k, n) + (1.0 - frac) * self.at("posterior_log_variance", k, n)

    def vlb_terms(
        self, x0: torch.Tensor, x_t: torch.Tensor, k: torch.Tensor, eps: torch.Tensor, v: torch.Tensor
    ) -> torch.Tensor:
        """``L_k`` per sample ``(B,)`` in bits/dim from predicted ``eps`` and variance input ``v`` ``(B, C, H, W)``.

        ``KL(q(x_{k-1} | x_k, x0) || p(x_{k-1} | x_k))`` for ``k > 0``, the discretized Gaussian decoder
        NLL (256 bins on ``[-1, 1]``) for ``k = 0``, exactly as guided-diffusion computes them.
        """
        true_mean, true_logvar = self.q_posterior(x0, x_t, k)
        model_logvar = self.learned_log_variance(v, k)
        model_mean, _ = self.q_posterior(self.predict_x0(x_t, k, eps), x_t, k)
        kl = normal_kl(true_mean, true_logvar, model_mean, model_logvar).flatten(1).mean(1) / math.log(2.0)
        nll = -discretized_gaussian_log_likelihood(x0, model_mean, 0.5 * model_logvar)
        nll = nll.flatten(1).mean(1) / math.log(2.0)
        return torch.where(k == 0, nll, kl)


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
