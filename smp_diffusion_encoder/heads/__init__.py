"""Heads on frozen multi-scale diffusion features: the paper's linear probe, Baranchuk's MLP ensemble,
and the feature cache they train from. Training loops live in :mod:`smp_diffusion_encoder.training`."""

from smp_diffusion_encoder.heads._bilinear import sample_pixels, upsample_rows
from smp_diffusion_encoder.heads.feature_cache import FeatureCache, encoder_fingerprint
from smp_diffusion_encoder.heads.linear_probe import LinearProbe, naive_linear_logits
from smp_diffusion_encoder.heads.mlp_ensemble import EnsembleHead, EnsemblePrediction, MLPEnsemble, pixel_mlp

__all__ = [
    "EnsembleHead",
    "EnsemblePrediction",
    "FeatureCache",
    "LinearProbe",
    "MLPEnsemble",
    "encoder_fingerprint",
    "naive_linear_logits",
    "pixel_mlp",
    "sample_pixels",
    "upsample_rows",
]
