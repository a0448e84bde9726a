"""Registration of the encoders with segmentation_models_pytorch (idempotent; runs on package import).

smp has no entry points: a name is an entry of the dict ``segmentation_models_pytorch.encoders.encoders``
(``{"encoder": cls, "params": {...}, "pretrained_settings": {...}}``); ``get_encoder`` builds
``cls(**params, depth=..., output_stride=...)``.
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch.encoders as smp_encoders

from smp_diffusion_encoder.encoder.features import FeatureConfig
from smp_diffusion_encoder.encoder.smp_encoder import DDPMEncoder
from smp_diffusion_encoder.encoder.variants import VARIANTS
from smp_diffusion_encoder.errors import ConfigError
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config

_FORBIDDEN_PREFIXES = ("tu-", "timm-", "mit_b", "vgg")  # smp decoders branch on these


def register_encoder(
    name: str,
    unet: UNetConfig | str | dict[str, Any],
    features: FeatureConfig | None = None,
    pretrained_settings: dict[str, dict[str, str]] | None = None,
) -> None:
    """Make ``smp.<Arch>(encoder_name=name)`` build a :class:`DDPMEncoder` with this architecture.

    ``pretrained_settings`` maps an ``encoder_weights`` value to ``{"repo_id": ..., "revision": <commit>}``
    of a Hub repo holding ``config.json`` + ``model.safetensors``. Re-registering a name replaces it.

    Example:
        >>> register_encoder("my-ddpm", "tiny", FeatureConfig(timesteps=(100,)))
        >>> "my-ddpm" in smp_encoders.encoders
        True
    """
    if name.startswith(_FORBIDDEN_PREFIXES):
        raise ConfigError(f"encoder name {name!r} must not start with {_FORBIDDEN_PREFIXES} (smp treats those specially)")
    smp_encoders.encoders[name] = {
        "encoder": DDPMEncoder,
        "params": {
            "unet": resolve_config(unet).to_dict(),
            "features": (features or FeatureConfig()).to_dict(),
        },
        "pretrained_settings": dict(pretrained_settings or {}),
    }


def register_all() -> None:
    """Register every variant of :data:`~smp_diffusion_encoder.encoder.variants.VARIANTS`.

    A variant with packaged default weights gets the keys ``"ct"`` and ``"imagenet"`` (an alias: smp's
    default value) for them, seeded into the HF cache (see :mod:`smp_diffusion_encoder.hub.packaged`).
    """
    from smp_diffusion_encoder.hub.packaged import packaged_pretrained_settings

    for v in VARIANTS:
        register_encoder(v.smp_name, v.preset, v.features, packaged_pretrained_settings(v.smp_name))
