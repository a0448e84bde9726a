"""The pretraining job's settings: one frozen dataclass, the command line is built from it (no torch).

``fixed`` settings define what is trained; a run resumed with ``--resume`` must keep them (checked against
its checkpoint). The others (how long, how often to log, precision, ...) may change between sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from smp_diffusion_encoder import _options
from smp_diffusion_encoder._options import option
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule, ScheduleName
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config


@dataclass(frozen=True)
class PretrainConfig:
    """What is trained, and how (``smp-diffusion pretrain``; :func:`~smp_diffusion_encoder.training.pretrain.run_pretraining`).

    Example:
        >>> cfg = PretrainConfig(unet="tiny", steps=100)
        >>> cfg.unet.image_size, cfg.batch_size, cfg.precision
        (64, 8, 'auto')
    """

    unet: UNetConfig = option(
        "small",
        "U-Net preset: adm-256, small or tiny (its image_size sets the slices' size)",
        flag="--preset",
        metavar="PRESET",
        type=str,
        fixed=True,
    )
    schedule: ScheduleName = option("linear", "noise schedule", fixed=True)
    num_timesteps: int = option(1000, "diffusion steps T", flag="--timesteps", fixed=True)
    batch_size: int = option(8, "global batch size (all processes together)", fixed=True)
    lr: float = option(1e-4, "AdamW learning rate", fixed=True)
    weight_decay: float = option(0.0, "AdamW weight decay", fixed=True)
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (0: constant rate)", fixed=True)
    vlb_weight: float = option(
        0.001, "hybrid-loss lambda of the variational bound (presets that learn sigma)", fixed=True
    )
    min_snr_gamma: float | None = option(
        None, "min-SNR-gamma weighting of the epsilon loss over timesteps (Hang et al. 2023), e.g. 5", fixed=True
    )
    seed: int = option(0, "seed of initialization, data order and diffusion noise", fixed=True)
    steps: int = option(10_000, "optimizer steps to reach (a resumed run continues up to it)")
    ema_decay: float | None = option(0.9999, "EMA decay of the exported weights (none: keep no EMA)")
    precision: Literal["auto", "fp32", "bf16"] = option(
        "auto",
        "bf16 autocast or fp32; auto: measured at the start on this machine (bf16 on CUDA and on CPUs "
        "where it is faster; a resumed run keeps its choice)",
    )
    grad_clip: float | None = option(1.0, "gradient-norm clipping (none: no clipping)")
    log_every: int = option(10, "log a metrics row every N steps")
    ckpt_every: int = option(1000, "checkpoint every N steps (and at the end)")
    milestones: tuple[int, ...] = option(
        (), "steps whose EMA weights are kept in RUN_DIR/milestones/ (a compute curve)", metavar="STEP"
    )
    max_minutes: float | None = option(
        None,
        "also stop after this many minutes of the training clock (wall time "
        "without each session's first step, where compilation and "
        "autotuning happen; a resumed run continues up to it)",
    )
    milestone_minutes: tuple[float, ...] = option(
        (),
        "points of the training clock (minutes) whose EMA weights are "
        "also kept in RUN_DIR/milestones/ (named by the step each "
        "falls on)",
        metavar="MIN",
    )
    workers: int = option(0, "DataLoader worker processes per training process (0: read in the main process)")
    preload: Literal["auto", "on", "off"] = option(
        "auto",
        "hold the whole slice store (float16) in the training device's memory and index batches there "
        "instead of reading them through a DataLoader; auto: on CUDA when it takes at most a quarter of "
        "the free GPU memory",
    )
    noise_rng: Literal["auto", "cpu", "device"] = option(
        "auto",
        "where each sample's timestep and noise are drawn: cpu (a seeded CPU generator per sample, copied "
        "over), device (a counter-based hash computed on the training device, no host work); auto: device "
        "on CUDA, cpu on CPUs (a resumed run keeps its choice)",
    )
    compile: bool = option(
        False,
        "torch.compile the U-Net (forward and backward): faster steps after a "
        "compilation in each session's first step; resume with the same setting "
        "(compiled and eager kernels round differently)",
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "unet", resolve_config(self.unet))
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))
        object.__setattr__(self, "milestone_minutes", tuple(float(m) for m in self.milestone_minutes))
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise ConfigError(f"max_minutes must be > 0 or none, got {self.max_minutes}")
        if any(m < 0 for m in self.milestone_minutes):
            raise ConfigError(f"milestone_minutes must be >= 0, got {list(self.milestone_minutes)}")
        NoiseSchedule(self.schedule, self.num_timesteps)  # validates the schedule
        if self.batch_size < 1 or self.lr <= 0 or self.warmup_steps < 0 or self.vlb_weight < 0 or self.steps < 1:
            raise ConfigError(
                f"bad pretraining settings: batch_size={self.batch_size}, lr={self.lr}, "
                f"warmup_steps={self.warmup_steps}, vlb_weight={self.vlb_weight}, steps={self.steps}"
            )
        if self.min_snr_gamma is not None and self.min_snr_gamma <= 0:
            raise ConfigError(f"min_snr_gamma must be > 0 or none, got {self.min_snr_gamma}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ConfigError(f"ema_decay must be in [0, 1) or none, got {self.ema_decay}")

    @property
    def noise_schedule(self) -> NoiseSchedule:
        return NoiseSchedule(self.schedule, self.num_timesteps)

    def to_dict(self) -> dict[str, Any]:
        return _options.to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PretrainConfig:
        return _options.from_dict(cls, d, source="pretraining config")

    def resume_problems(self, saved: dict[str, Any]) -> list[str]:
        """Differences in ``fixed`` settings between a checkpoint's saved config and this one."""
        return _options.differences(saved, self, _options.fixed_fields(PretrainConfig))
