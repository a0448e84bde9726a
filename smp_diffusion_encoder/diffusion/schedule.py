"""Named noise schedules: the betas ``(T,)`` a diffusion model is trained against (NumPy, no torch).

Named schedules are committed: a schedule, once released under a name, is never changed (weights were
trained against it). The arithmetic of the diffusion process on a schedule (forward noising, posterior,
respacing) is :class:`~smp_diffusion_encoder.diffusion.gaussian.GaussianDiffusion`.

- ``linear``: DDPM (Ho et al. 2020), betas from ``1e-4`` to ``0.02`` rescaled for ``T != 1000``.
- ``cosine``: Nichol & Dhariwal 2021, ``alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) * pi / 2)``, s=0.008,
  betas clipped at 0.999.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

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
        >>> s.betas.shape, round(float(s.alphas_cumprod[-1]), 6)
        ((1000,), 4e-05)
    """

    name: ScheduleName = "linear"
    num_timesteps: int = 1000

    def __post_init__(self) -> None:
        make_betas(self.name, self.num_timesteps)  # validates the name and T

    @property
    def betas(self) -> np.ndarray:
        return make_betas(self.name, self.num_timesteps)

    @property
    def alphas_cumprod(self) -> np.ndarray:
        """``alpha_bar_t = prod_{s<=t} (1 - beta_s)``, float64 ``(T,)``."""
        return np.cumprod(1.0 - self.betas)

    def validate_timesteps(self, timesteps: np.ndarray | list[int] | tuple[int, ...]) -> None:
        """Raise :class:`ConfigError` listing the timesteps outside ``0 .. T-1``."""
        bad = [int(t) for t in np.atleast_1d(timesteps) if not 0 <= int(t) < self.num_timesteps]
        if bad:
            raise ConfigError(f"timesteps {bad} are outside 0..{self.num_timesteps - 1}")

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "num_timesteps": self.num_timesteps}
