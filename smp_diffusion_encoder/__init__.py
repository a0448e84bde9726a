"""smp_diffusion_encoder: a DDPM pretrained on unlabeled CT as a label-efficient segmentation encoder.

Importing the package registers the ``ddpm-ct*`` encoders with segmentation_models_pytorch and the
``ddpm_ct_unet*`` models with timm (idempotently)::

    import segmentation_models_pytorch as smp
    import smp_diffusion_encoder  # noqa: F401  (registers "ddpm-ct")

    model = smp.Unet(encoder_name="ddpm-ct", encoder_weights=None, in_channels=1, classes=14)
"""

from smp_diffusion_encoder.diffusion import NoiseSchedule
from smp_diffusion_encoder.encoder import (
    VARIANTS,
    DDPMCTUNet,
    DDPMEncoder,
    DiffusionFeatureEncoder,
    FeatureConfig,
    register_all,
    register_encoder,
)
from smp_diffusion_encoder.models import PRESETS, DiffusionUNet, UNetConfig

__version__ = "0.1.0.dev0"

register_all()

__all__ = [
    "PRESETS",
    "VARIANTS",
    "DDPMCTUNet",
    "DDPMEncoder",
    "DiffusionFeatureEncoder",
    "DiffusionUNet",
    "FeatureConfig",
    "NoiseSchedule",
    "UNetConfig",
    "__version__",
    "register_encoder",
]
