"""Feature extraction and the smp / timm faces of the diffusion encoder."""

from smp_diffusion_encoder.encoder.features import (
    DiffusionFeatureEncoder,
    FeatureConfig,
    FeaturePyramid,
    default_blocks,
)
from smp_diffusion_encoder.encoder.registry import register_all, register_encoder
from smp_diffusion_encoder.encoder.smp_encoder import DDPMEncoder
from smp_diffusion_encoder.encoder.timm_model import DDPMCTUNet
from smp_diffusion_encoder.encoder.variants import VARIANTS, Variant, get_variant

__all__ = [
    "VARIANTS",
    "DDPMCTUNet",
    "DDPMEncoder",
    "DiffusionFeatureEncoder",
    "FeatureConfig",
    "FeaturePyramid",
    "Variant",
    "default_blocks",
    "get_variant",
    "register_all",
    "register_encoder",
]
