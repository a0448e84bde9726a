"""The one table of encoder variants: every registered smp and timm name derives from it.

============  =======================  ===========  ======================================
smp name      timm name                U-Net        use
============  =======================  ===========  ======================================
ddpm-ct       ddpm_ct_unet             ``small``    default; CPU-practical, shipped weights
ddpm-ct-adm   ddpm_ct_unet_adm256      ``adm-256``  the paper's backbone (GPU)
ddpm-ct-tiny  ddpm_ct_unet_tiny        ``tiny``     tests and smoke runs
============  =======================  ===========  ======================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

from smp_diffusion_encoder.encoder.features import FeatureConfig


@dataclass(frozen=True)
class Variant:
    smp_name: str
    timm_name: str
    preset: str
    features: FeatureConfig = field(default_factory=FeatureConfig)


VARIANTS: tuple[Variant, ...] = (
    Variant("ddpm-ct", "ddpm_ct_unet", "small"),
    Variant("ddpm-ct-adm", "ddpm_ct_unet_adm256", "adm-256"),
    Variant("ddpm-ct-tiny", "ddpm_ct_unet_tiny", "tiny"),
)


def get_variant(name: str) -> Variant:
    for v in VARIANTS:
        if name in (v.smp_name, v.timm_name):
            return v
    raise KeyError(f"unknown encoder variant {name!r}; known: {[v.smp_name for v in VARIANTS]}")
