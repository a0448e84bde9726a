"""The feature-selection job's settings (``smp-diffusion select-features``): one frozen dataclass, no torch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import option
from smp_diffusion_encoder.errors import ConfigError


@dataclass(frozen=True)
class SelectionConfig:
    """What is searched and how each candidate is scored (``smp-diffusion select-features``)."""

    encoder: str = option("ddpm-ct", "registered ddpm-ct encoder whose U-Net and weights are used")
    encoder_weights: str | None = option("auto", "weights key (auto: the default CT weights; none: random)")
    timesteps: tuple[int, ...] = option(
        (10, 25, 50, 100, 150, 250, 400, 600), "candidate diffusion timesteps", metavar="T"
    )
    max_timesteps: int = option(3, "at most this many timesteps in the selection")
    block: int = option(
        4,
        "z blocks of this many labeled slices alternate between training and scoring the probes "
        "(one slice dropped between them)",
    )
    steps: int = option(300, "probe training steps per candidate")
    seed: int = option(0, "seed of the split and the probes")
    device: str = option("auto", "auto (CUDA when available), cpu or cuda")
    precision: str = option(
        "auto",
        "auto: bfloat16 autocast for the U-Net's activations where the device computes "
        "bf16 natively (CUDA; CPUs with AVX512-BF16 or AMX), else fp32; or fp32, bf16",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "timesteps", tuple(sorted({int(t) for t in self.timesteps})))
        if not self.timesteps or self.max_timesteps < 1 or self.steps < 1 or self.block < 1:
            raise ConfigError(
                f"bad selection settings: timesteps={self.timesteps}, max_timesteps="
                f"{self.max_timesteps}, steps={self.steps}, block={self.block}"
            )

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)
