"""Sampling from a trained noise-prediction network: DDPM ancestral sampling and DDIM.

Both samplers run on a respaced :class:`~smp_diffusion_encoder.diffusion.gaussian.GaussianDiffusion` (its
posterior coefficients and variances; the network is always called with the original timestep):

- DDPM (Ho et al. 2020): ``x_{k-1} ~ N(mu(x_k, x0_hat), sigma_k^2)`` with the posterior mean of
  ``q(x_{k-1} | x_k, x_0)``; variance ``fixed_small`` (``beta~``), ``fixed_large`` (``beta``, with
  ``beta~_1`` at the first step, as in guided-diffusion) or ``learned``: a network with ``2C`` outputs
  predicts ``v`` in [-1, 1] and ``log sigma^2 = (v+1)/2 log beta + (1-v)/2 log beta~`` (improved DDPM).
- DDIM (Song et al. 2021): ``x_{k-1} = sqrt(abar') x0_hat + sqrt(1 - abar' - s^2) eps_hat + s z`` with
  ``s = eta sqrt((1-abar')/(1-abar)) sqrt(1 - abar/abar')``. With ``eta = 1`` and all ``T`` steps this IS
  DDPM with ``fixed_small`` variance (same noise draws give the same samples); ``eta = 0`` is deterministic.

Random numbers come from one CPU ``torch.Generator`` seeded by ``seed`` and are drawn in a fixed order
(initial noise, then one draw per step), so a seed gives the same samples on any device for the same
``batch_size``.

Example:
    >>> net = DiffusionUNet("tiny").eval()
    >>> x = sample(net, NoiseSchedule("linear", 1000), SampleConfig(num_samples=2, steps=5), progress=False)
    >>> tuple(x.shape)
    (2, 1, 64, 64)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from smp_diffusion_encoder.diffusion.gaussian import GaussianDiffusion, respaced_timesteps
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.generation.config import SampleConfig, SamplerName, VarianceType
from smp_diffusion_encoder.models.unet import DiffusionUNet  # noqa: F401  (docstring example)

#: ``model(x_t (B, C, H, W), t (B,) int64) -> (B, C or 2C, H, W)``: eps, or eps and the variance input v.
EpsModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
        sampler, steps, eta, variance, clip_denoised: see :class:`~smp_diffusion_encoder.generation.config.SampleConfig`.
        generator: CPU generator for all noise (drawn on the CPU, then moved to ``device``).
        device: where the model runs (default: the device of its first parameter, else CPU).
        on_step: called after every step (progress bars).
    """
    if sampler not in ("ddpm", "ddim"):
        raise ConfigError(f"unknown sampler {sampler!r}; choose 'ddpm' or 'ddim'")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    var_type = _resolve_variance(variance, model)
    if var_type not in ("fixed_small", "fixed_large", "learned"):
        raise ConfigError(f"unknown variance {variance!r}; choose auto, fixed_small, fixed_large or learned")
    if device is None:
        params = list(model.parameters()) if isinstance(model, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    diffusion = GaussianDiffusion(
        schedule, steps or SampleConfig(sampler=sampler).resolved_steps(schedule.num_timesteps)
    )
    tables = diffusion.np_tables
    c, n = shape[1], len(shape)

    def randn() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    x = randn()
    for k in reversed(range(diffusion.num_steps)):
        index = torch.full((shape[0],), k, dtype=torch.long, device=device)
        out = model(x, torch.full_like(index, int(diffusion.timesteps[k])))
        if out.shape[1] not in (c, 2 * c) or out.shape[2:] != x.shape[2:]:
            raise ConfigError(f"model output {tuple(out.shape)} is neither eps nor (eps, v) for input {tuple(x.shape)}")
        eps, v = (out[:, :c], out[:, c:]) if out.shape[1] == 2 * c else (out, None)
        x0 = diffusion.predict_x0(x, index, eps)
        if clip_denoised:  # keep eps consistent with the clipped x0
            x0 = x0.clamp(-1.0, 1.0)
            eps = diffusion.predict_eps(x, index, x0)
        z = randn()
        if sampler == "ddim":
            abar, abar_prev = float(tables["alphas_cumprod"][k]), float(tables["alphas_cumprod_prev"][k])
            sigma = eta * ((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev)) ** 0.5
            x = abar_prev**0.5 * x0 + max(1 - abar_prev - sigma**2, 0.0) ** 0.5 * eps + sigma * z
        else:
            mean, small = diffusion.q_posterior(x0, x, index)
            if var_type == "learned":
                if v is None:
                    raise ConfigError("variance='learned' needs a model with 2C output channels (learn_sigma)")
                log_var = diffusion.learned_log_variance(v.float(), index)
            else:
                log_var = small if var_type == "fixed_small" else diffusion.at("large_log_variance", index, n)
            x = mean + (torch.exp(0.5 * log_var) * z if k > 0 else 0.0)
        if on_step is not None:
            on_step()
    return x


def sample(
    model: EpsModel,
    schedule: NoiseSchedule,
    config: SampleConfig,
    *,
    image_size: int | None = None,
    channels: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """``config.num_samples`` images ``(N, C, H, H)`` on the CPU, drawn in batches of ``config.batch_size``.

    ``image_size`` and ``channels`` default to the model's ``config`` (a :class:`DiffusionUNet`). One
    generator seeded with ``config.seed`` serves all batches, so the result depends on the seed and the
    batch size only; a tqdm bar counts denoising steps over all batches.
    """
    unet_config = getattr(model, "config", None)
    image_size = image_size or getattr(unet_config, "image_size", None)
    channels = channels or getattr(unet_config, "in_channels", None)
    if image_size is None or channels is None:
        raise ConfigError("pass image_size and channels for a model without a UNetConfig")
    steps = config.resolved_steps(schedule.num_timesteps)
    generator = torch.Generator(device="cpu").manual_seed(config.seed)
    n, b = config.num_samples, config.batch_size
    sizes = [min(b, n - i) for i in range(0, n, b)]
    total = len(sizes) * len(respaced_timesteps(schedule.num_timesteps, steps))
    out = []
    with tqdm(total=total, desc=f"{config.sampler} sampling", unit="step", disable=not progress) as bar:
        for size in sizes:
            x = sample_batch(
                model,
                schedule,
                (size, channels, image_size, image_size),
                sampler=config.sampler,
                steps=steps,
                eta=config.eta,
                variance=config.variance,
                clip_denoised=config.clip_denoised,
                generator=generator,
                device=device,
                on_step=bar.update,
            )
            out.append(x.float().cpu())
    return torch.cat(out)


__all__ = ["EpsModel", "sample", "sample_batch"]
