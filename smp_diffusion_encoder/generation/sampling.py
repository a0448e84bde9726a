"""Sampling from a trained noise-prediction network: DDPM ancestral sampling and DDIM.

The schedule (:class:`~smp_diffusion_encoder.diffusion.NoiseSchedule`) only supplies ``alpha_bar_t``; all
sampler math lives here. Both samplers run on a *respaced* process: a subsequence
``tau_0 < tau_1 < ... < tau_{K-1}`` of the ``T`` training steps, evenly spaced and always holding ``0`` and
``T-1`` (:func:`respaced_timesteps`), with ``beta'_k = 1 - abar[tau_k] / abar[tau_{k-1}]`` (guided-diffusion's
``space_timesteps``). The network is always called with the original timestep ``tau_k``.

- DDPM (Ho et al. 2020): ``x_{k-1} ~ N(mu(x_k, x0_hat), sigma_k^2)`` with the posterior mean of
  ``q(x_{k-1} | x_k, x_0)``; variance ``fixed_small`` (``beta_tilde``), ``fixed_large`` (``beta``, with
  ``beta_tilde_1`` at the first step, as in guided-diffusion) or ``learned``: a network with ``2C`` outputs
  predicts ``v`` in [-1, 1] and ``log sigma^2 = (v+1)/2 log beta + (1-v)/2 log beta_tilde`` (improved DDPM).
- DDIM (Song et al. 2021): ``x_{k-1} = sqrt(abar') x0_hat + sqrt(1 - abar' - s^2) eps_hat + s z`` with
  ``s = eta sqrt((1-abar')/(1-abar)) sqrt(1 - abar/abar')``. With ``eta = 1`` and all ``T`` steps this IS
  DDPM with ``fixed_small`` variance (same noise draws give the same samples); ``eta = 0`` is deterministic.

Random numbers come from one CPU ``torch.Generator`` seeded by ``seed`` and are drawn in a fixed order
(initial noise, then one draw per step), so a seed gives the same samples on any device for the same
``batch_size``.

Example:
    >>> net = DiffusionUNet("tiny").eval()
    >>> x = sample(net, NoiseSchedule("linear", 1000), 2, sampler="ddim", steps=5, seed=0, progress=False)
    >>> tuple(x.shape)
    (2, 1, 64, 64)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models.unet import DiffusionUNet  # noqa: F401  (docstring example)

SamplerName = Literal["ddpm", "ddim"]
VarianceType = Literal["auto", "fixed_small", "fixed_large", "learned"]
#: ``model(x_t (B, C, H, W), t (B,) int64) -> (B, C or 2C, H, W)``: eps, or eps and the variance input v.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


class _Respaced:
    """Per-step coefficients (float64 numpy, index ``k`` = position in the respaced sequence)."""

    def __init__(self, schedule: NoiseSchedule, steps: int) -> None:
        self.timesteps = respaced_timesteps(schedule.num_timesteps, steps)
        abar = schedule.alphas_cumprod[self.timesteps]
        abar_prev = np.append(1.0, abar[:-1])
        self.abar, self.abar_prev = abar, abar_prev
        self.betas = 1.0 - abar / abar_prev
        self.posterior_variance = self.betas * (1.0 - abar_prev) / (1.0 - abar)
        # beta_tilde_0 = 0: use beta_tilde_1 in the log (guided-diffusion); at k = 0 no noise is added anyway
        first = self.posterior_variance[1] if len(abar) > 1 else self.betas[0]
        self.log_var_small = np.log(np.append(first, self.posterior_variance[1:]))
        self.log_var_large = np.log(np.append(first, self.betas[1:]))
        self.coef_x0 = self.betas * np.sqrt(abar_prev) / (1.0 - abar)
        self.coef_xt = (1.0 - abar_prev) * np.sqrt(1.0 - self.betas) / (1.0 - abar)


def _predict(
    model: EpsModel, x: torch.Tensor, t: int, abar: float, *, clip_denoised: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``(eps_hat, x0_hat, v or None)`` for ``x (B, C, H, W)`` at original timestep ``t``.

    When ``x0_hat`` is clipped to [-1, 1], ``eps_hat`` is re-derived from it, so both stay consistent.
    """
    c = x.shape[1]
    tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    out = model(x, tt)
    if out.shape[1] not in (c, 2 * c) or out.shape[2:] != x.shape[2:]:
        raise ConfigError(f"model output {tuple(out.shape)} is neither eps nor (eps, v) for input {tuple(x.shape)}")
    eps, v = (out[:, :c], out[:, c:]) if out.shape[1] == 2 * c else (out, None)
    x0 = (x - (1.0 - abar) ** 0.5 * eps) / abar**0.5
    if clip_denoised:
        x0 = x0.clamp(-1.0, 1.0)
        eps = (x - abar**0.5 * x0) / (1.0 - abar) ** 0.5
    return eps, x0, v


def _resolve_variance(variance: VarianceType, model: EpsModel) -> VarianceType:
    if variance != "auto":
        return variance
    config = getattr(model, "config", None)
    return "learned" if getattr(config, "learn_sigma", False) else "fixed_large"


@torch.no_grad()
def sample_batch(
    model: EpsModel,
    schedule: NoiseSchedule,
    shape: tuple[int, int, int, int],
    *,
    sampler: SamplerName = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    variance: VarianceType = "auto",
    clip_denoised: bool = True,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    on_step: Callable[[], None] | None = None,
) -> torch.Tensor:
    """One batch of samples ``shape = (B, C, H, W)`` in model space ([-1, 1] when ``clip_denoised``).

    Args:
        model: noise predictor (e.g. an eval-mode :class:`DiffusionUNet`).
        schedule: the schedule the model was trained with.
        sampler: ``"ddpm"`` (ancestral) or ``"ddim"``.
        steps: respaced steps (default: all ``T`` for DDPM, 50 for DDIM, capped at ``T``).
        eta: DDIM stochasticity (0 deterministic, 1 = DDPM with ``fixed_small`` variance). Ignored by DDPM.
        variance: DDPM variance; ``"auto"`` is ``learned`` for a model whose ``config.learn_sigma`` is
            set, else ``fixed_large`` (Ho et al.'s choice). Ignored by DDIM.
        clip_denoised: clip the predicted ``x0`` to [-1, 1] at every step.
        generator: CPU generator for all noise (drawn on the CPU, then moved to ``device``).
        device: where the model runs (default: the device of its first parameter, else CPU).
        on_step: called after every step (progress bars).
    """
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"unknown sampler {sampler!r}; choose 'ddpm' or 'ddim'")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    steps = steps or default_steps(sampler, schedule.num_timesteps)
    if device is None:
        params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    rs = _Respaced(schedule, steps)
    var_type = _resolve_variance(variance, model)
    if var_type not in ("fixed_small", "fixed_large", "learned"):
        raise ConfigError(f"unknown variance {variance!r}; choose auto, fixed_small, fixed_large or learned")

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    x = randn()
    for k in reversed(range(len(rs.timesteps))):
        abar, abar_prev = float(rs.abar[k]), float(rs.abar_prev[k])
        eps, x0, v = _predict(model, x, int(rs.timesteps[k]), abar, clip_denoised=clip_denoised)
        z = randn()
        if sampler == "ddim":
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
            x = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps + sigma * z
        else:
            mean = float(rs.coef_x0[k]) * x0 + float(rs.coef_xt[k]) * x
            if var_type == "learned":
                if v is None:
                    raise ConfigError("variance='learned' needs a model with 2C output channels (learn_sigma)")
                frac = (v.float() + 1) / 2
                log_var = frac * float(rs.log_var_large[k]) + (1 - frac) * float(rs.log_var_small[k])
            else:
                log_var = torch.tensor(
                    float((rs.log_var_small if var_type == "fixed_small" else rs.log_var_large)[k]), device=device
                )
            x = mean + (torch.exp(0.5 * log_var) * z if k > 0 else 0.0)
        if on_step is not None:
            on_step()
    return x


def default_steps(sampler: SamplerName, num_timesteps: int) -> int:
    """All ``T`` steps for DDPM, 50 (at most ``T``) for DDIM."""
    return num_timesteps if sampler == "ddpm" else min(50, num_timesteps)


def sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    num_samples: int,
    *,
    sampler: SamplerName = "ddim",
    steps: int | None = None,
    eta: float = 0.0,
    variance: VarianceType = "auto",
    clip_denoised: bool = True,
    image_size: int | None = None,
    channels: int | None = None,
    batch_size: int = 16,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """``num_samples`` images ``(N, C, H, H)`` on the CPU, drawn in batches of ``batch_size``.

    ``image_size`` and ``channels`` default to the model's ``config`` (a :class:`DiffusionUNet`); the
    sampler arguments are those of :func:`sample_batch`. One generator seeded with ``seed`` serves all
    batches, so the result depends on ``seed`` and ``batch_size`` only; a tqdm bar counts denoising steps
    over all batches.
    """
    if num_samples < 1 or batch_size < 1:
        raise ConfigError(f"num_samples and batch_size must be >= 1, got {num_samples} and {batch_size}")
    config = getattr(model, "config", None)
    image_size = image_size or getattr(config, "image_size", None)
    channels = channels or getattr(config, "in_channels", None)
    if image_size is None or channels is None:
        raise ConfigError("pass image_size and channels for a model without a UNetConfig")
    steps = steps or default_steps(sampler, schedule.num_timesteps)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    sizes = [min(batch_size, num_samples - i) for i in range(0, num_samples, batch_size)]
    total = len(sizes) * len(respaced_timesteps(schedule.num_timesteps, steps))
    out = []
    with tqdm(total=total, desc=f"{sampler} sampling", unit="step", disable=not progress) as bar:
        for b in sizes:
            x = sample_batch(
                model, schedule, (b, channels, image_size, image_size), sampler=sampler, steps=steps, eta=eta,
                variance=variance, clip_denoised=clip_denoised, generator=generator, device=device,
                on_step=bar.update,
            )
            out.append(x.float().cpu())
    return torch.cat(out)


__all__ = ["EpsModel", "SamplerName", "VarianceType", "default_steps", "respaced_timesteps", "sample", "sample_batch"]
