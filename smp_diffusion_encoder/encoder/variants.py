"""The one static table of built-in encoder variants (plain data, no torch); the registry derives the smp and
timm names from it (:mod:`smp_diffusion_encoder.registry`).

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

from smp_diffusion_encoder.encoder.config import EncoderSpec, FeatureConfig


@dataclass(frozen=True)
class Variant:
    """A built-in encoder: its smp and timm names, U-Net preset and feature selection."""

    smp_name: str
    timm_name: str
    preset: str
    features: FeatureConfig = field(default_factory=FeatureConfig)

    @property
    def spec(self) -> EncoderSpec:
        return EncoderSpec(self.preset, self.features)  # type: ignore[arg-type]


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
