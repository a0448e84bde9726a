"""smp_diffusion_encoder: a DDPM pretrained on unlabeled CT as a label-efficient segmentation encoder.

Importing the package registers the ``ddpm-ct*`` encoders with segmentation_models_pytorch and the
``ddpm_ct_unet*`` models with timm (at once if they are already imported, else when they are); it imports
no torch and writes nothing (see :mod:`smp_diffusion_encoder.registry`)::

    import segmentation_models_pytorch as smp
    import smp_diffusion_encoder  # noqa: F401  (registers "ddpm-ct")

    model = smp.Unet(encoder_name="ddpm-ct", encoder_weights=None, in_channels=1, classes=14)

Public names below load their module on first use.
"""

import lazy_loader as _lazy

from smp_diffusion_encoder.registry.hooks import install as _install

__version__ = "0.3.0.dev0"

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "diffusion.schedule": ["NoiseSchedule"],
        "diffusion.gaussian": ["GaussianDiffusion"],
        "encoder.config": ["EncoderSpec", "FeatureConfig"],
        "encoder.variants": ["VARIANTS"],
        "encoder.features": ["DiffusionFeatureEncoder"],
        "encoder.smp_encoder": ["DDPMEncoder"],
        "encoder.timm_model": ["DDPMCTUNet"],
        "models.config": ["PRESETS", "UNetConfig"],
        "models.unet": ["DiffusionUNet"],
        "registry.records": ["resolve"],
        "registry.smp_names": ["register_encoder"],
    },
)
__all__ = [*__all__, "__version__"]

_install()
