"""Network architectures (no noise schedules, no training)."""

from smp_diffusion_encoder.models.config import PRESETS, UNetConfig, get_preset, resolve_config
from smp_diffusion_encoder.models.unet import DiffusionUNet

__all__ = ["PRESETS", "DiffusionUNet", "UNetConfig", "get_preset", "resolve_config"]
