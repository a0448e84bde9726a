"""Noise schedules and forward noising ``q(x_t | x_0)``.

The schedule knows nothing about networks or training. Named schedules are committed: a schedule, once
released under a name, is never changed (weights were trained against it).

- ``linear``: DDPM (Ho et al. 2020), betas from ``1e-4`` to ``0.02`` rescaled for ``T != 1000``.
- ``cosine``: Nichol & Dhariwal 2021, ``alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2)``, s=0.008,
  betas clipped at 0.999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from smp_diffusion_encoder.errors import ConfigError

ScheduleName = Literal["linear", "cosine"]


def make_betas(name: ScheduleName, num_timesteps: int = 1000) -> np.ndarray:
    """Betas ``(T,)`` in float64 for a named schedule."""
    if num_timesteps < 1:
        raise ConfigError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":

        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        return np.array(
            [
                min(1 - alpha_bar((i + 1) / num_timesteps) / alpha_bar(i / num_timesteps), 0.999)
                for i in range(num_timesteps)
            ],
            dtype=np.float64,
        )
    raise ConfigError(f"unknown noise schedule {name!r}; choose 'linear' or 'cosine'")


@dataclass(frozen=True)
class NoiseSchedule:
    """A discrete diffusion schedule with ``T`` steps, ``t = 0 .. T-1``.

    Example:
        >>> s = NoiseSchedule("linear")
        >>> x0 = torch.zeros(2, 1, 8, 8)
        >>> s.q_sample(x0, torch.tensor([0, 999]), torch.ones_like(x0)).shape
        torch.Size([2, 1, 8, 8])
    """

    name: ScheduleName = "linear"
    num_timesteps: int = 1000

    @property
    def betas(self) -> np.ndarray:
        return make_betas(self.name, self.num_timesteps)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """``alpha_bar_t = prod_{s<=t} (1 - beta_s)``, float64 ``(T,)``."""
        return np.cumprod(1.0 - self.betas)

    def validate_timesteps(self, timesteps: "np.ndarray | list[int] | tuple[int, ...]") -> None:
        bad = [int(t) for t in np.atleast_1d(timesteps) if not 0 <= int(t) < self.num_timesteps]
        if bad:
            raise ConfigError(f"timesteps {bad} are outside 0..{self.num_timesteps - 1}")

    def coefficients(self, timesteps: "torch.Tensor | list[int] | tuple[int, ...]") -> tuple[torch.Tensor, torch.Tensor]:
        """``(sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t))`` as float32 tensors shaped like ``timesteps``.

        A tensor argument keeps its device; a list gives tensors on the default device.
        """
        if isinstance(timesteps, torch.Tensor):
            abar = torch.from_numpy(self.alphas_cumprod).to(timesteps.device)[timesteps.long()]
            if not timesteps.is_meta and ((timesteps < 0) | (timesteps >= self.num_timesteps)).any():
                self.validate_timesteps(timesteps.cpu().numpy())
        else:
            self.validate_timesteps(timesteps)
            abar = torch.tensor(self.alphas_cumprod[np.asarray(timesteps, dtype=np.int64)])
        return abar.sqrt().float(), (1.0 - abar).sqrt().float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise`` for per-sample ``t`` of shape ``(B,)``."""
        a, s = self.coefficients(t.to(x0.device))
        shape = (-1,) + (1,) * (x0.dim() - 1)
        return a.to(x0.dtype).reshape(shape) * x0 + s.to(x0.dtype).reshape(shape) * noise
