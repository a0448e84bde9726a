"""The encoder's modules and plain-data descriptions: feature extraction and its smp / timm faces.

- :mod:`.config`: :class:`FeatureConfig`, :class:`EncoderSpec` (no torch).
- :mod:`.variants`: the static table of built-in variants (no torch).
- :mod:`.features`: :class:`DiffusionFeatureEncoder`, :class:`FeaturePyramid`, :func:`encoder_state_dict`.
- :mod:`.smp_encoder`: :class:`DDPMEncoder` (smp); :mod:`.timm_model`: :class:`DDPMCTUNet` (timm).

Which names smp and timm know is decided in :mod:`smp_diffusion_encoder.registry`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["EncoderSpec", "FeatureConfig", "default_blocks"],
        "variants": ["VARIANTS", "Variant", "get_variant"],
        "features": ["DiffusionFeatureEncoder", "FeaturePyramid", "encoder_state_dict"],
        "smp_encoder": ["DDPMEncoder"],
        "timm_model": ["DDPMCTUNet"],
    },
)
