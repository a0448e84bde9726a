"""Heads on frozen multi-scale diffusion features: the paper's linear probe, Baranchuk's MLP ensemble,
the feature cache they train from, :class:`ProbeModel` (an encoder and its head as one model) and
:class:`ModelEnsemble` (several trained segmenters predicting as one). Training
loops live in :mod:`smp_diffusion_encoder.training`."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "_bilinear": ["sample_pixels", "upsample_rows"],
        "feature_cache": ["FeatureCache", "encoder_fingerprint"],
        "linear_probe": ["LinearProbe", "naive_linear_logits"],
        "mlp_ensemble": ["EnsembleHead", "EnsemblePrediction", "MLPEnsemble", "pixel_mlp"],
        "model_ensemble": ["ModelEnsemble"],
        "probe_model": ["HeadKind", "ProbeModel", "predict_classes"],
    },
)
