"""Generation: sampling a pretrained diffusion U-Net, sample outputs, generation metrics, encoder export.

=====================  =====================================================================
module                 responsibility
=====================  =====================================================================
``sampling``           DDPM ancestral and DDIM samplers on a respaced schedule
``run``                reading a pretraining run folder (layout documented there)
``outputs``            PNG grid / PNGs / NumPy / NIfTI stacks of samples
``metrics``            FID, sFID, improved precision/recall, F1 on feature arrays
``inception``          Inception-V3 features from a local weights file (never downloaded)
``evaluate``           metrics between two image sets on disk
``export``             pretraining run -> encoder weights folder for smp and timm
=====================  =====================================================================
"""

from smp_diffusion_encoder.generation.export import encoder_state_dict, export_encoder
from smp_diffusion_encoder.generation.metrics import (
    GenerationMetrics,
    f1_score,
    feature_statistics,
    frechet_distance,
    generation_metrics,
    precision_recall,
)
from smp_diffusion_encoder.generation.run import RunInfo, load_run
from smp_diffusion_encoder.generation.sampling import respaced_timesteps, sample, sample_batch

__all__ = [
    "GenerationMetrics",
    "RunInfo",
    "encoder_state_dict",
    "export_encoder",
    "f1_score",
    "feature_statistics",
    "frechet_distance",
    "generation_metrics",
    "load_run",
    "precision_recall",
    "respaced_timesteps",
    "sample",
    "sample_batch",
]
