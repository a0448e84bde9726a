"""The sampling job's settings (``smp-diffusion sample``; :func:`~smp_diffusion_encoder.generation.sampling.sample`).

One frozen dataclass, no torch: the command line is built from it and ``samples.json`` records it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import option
from smp_diffusion_encoder.errors import ConfigError

SamplerName = Literal["ddpm", "ddim"]
VarianceType = Literal["auto", "fixed_small", "fixed_large", "learned"]


@dataclass(frozen=True)
class SampleConfig:
    """How samples are drawn.

    Example:
        >>> SampleConfig(sampler="ddpm").resolved_steps(1000), SampleConfig().resolved_steps(1000)
        (1000, 50)
    """

    num_samples: int = option(16, "number of samples", flag="--n", metavar="N")
    sampler: SamplerName = option("ddim", "ddim (deterministic with --eta 0) or ddpm (ancestral)")
    steps: int | None = option(None, "respaced denoising steps (none: 50 for ddim, T for ddpm)")
    eta: float = option(0.0, "DDIM stochasticity (0 deterministic, 1 = DDPM with the posterior variance)")
    variance: VarianceType = option(
        "auto", "DDPM variance (auto: learned when the U-Net predicts it, else fixed_large); ignored by DDIM"
    )
    clip_denoised: bool = option(True, "clip the predicted x0 to [-1, 1] at every step")
    batch_size: int = option(16, "samples per batch (with the seed it fixes the samples)")
    seed: int = option(0, "seed of all noise (one CPU generator, so any device gives the same samples)")

    def __post_init__(self) -> None:
        if self.num_samples < 1 or self.batch_size < 1:
            raise ConfigError(f"num_samples and batch_size must be >= 1, got {self.num_samples} and {self.batch_size}")
        if self.eta < 0:
            raise ConfigError(f"eta must be >= 0, got {self.eta}")
        if self.sampler not in ("ddpm", "ddim"):
            raise ConfigError(f"unknown sampler {self.sampler!r}; choose 'ddpm' or 'ddim'")

    def resolved_steps(self, num_timesteps: int) -> int:
        """``steps``, or its default: all ``T`` steps for DDPM, 50 (at most ``T``) for DDIM."""
        return self.steps or (num_timesteps if self.sampler == "ddpm" else min(50, num_timesteps))

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)
