"""Post-processing is data code (label and probability volumes, no model): it lives in
:mod:`smp_diffusion_encoder.data.postprocess`, below the model folder format that records it; its names stay
importable from here."""

from smp_diffusion_encoder.data.postprocess import (
    TUBULAR_KEEP_FRACTION,
    TUBULAR_ORGANS,
    PostprocessingConfig,
    keep_largest_components,
    smooth_along_z,
)

__all__ = [
    "TUBULAR_KEEP_FRACTION",
    "TUBULAR_ORGANS",
    "PostprocessingConfig",
    "keep_largest_components",
    "smooth_along_z",
]
