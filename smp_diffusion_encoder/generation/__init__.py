"""Generation: sampling a pretrained diffusion U-Net, sample outputs, generation metrics.

=====================  =====================================================================
module                 responsibility
=====================  =====================================================================
``config``             :class:`SampleConfig`, the sampling job's settings (no torch)
``sampling``           DDPM ancestral and DDIM samplers on a respaced process
``outputs``            PNG grid / PNGs / NumPy / NIfTI stacks of samples
``metrics``            FID, sFID, improved precision/recall, F1 on feature arrays
``inception``          Inception-V3 features from a local weights file (never downloaded)
``evaluate``           metrics between two image sets on disk
=====================  =====================================================================

Run folders are read by :mod:`smp_diffusion_encoder.training.run_folder`; encoder export lives with the
weights format (:mod:`smp_diffusion_encoder.hub.export`).
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "config": ["SampleConfig"],
        "metrics": [
            "GenerationMetrics",
            "f1_score",
            "feature_statistics",
            "frechet_distance",
            "generation_metrics",
            "precision_recall",
        ],
        "sampling": ["sample", "sample_batch"],
    },
)
