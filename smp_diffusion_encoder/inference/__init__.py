"""Inference: model folders (whole smp models, linear probes) and whole-volume prediction to NIfTI."""

from smp_diffusion_encoder.inference.model_dir import (
    ProbeModel,
    SegmentationModel,
    load_model,
    load_probe,
    save_probe,
    save_segmenter,
)
from smp_diffusion_encoder.inference.volume import (
    PredictReport,
    VolumePrediction,
    case_name,
    predict_files,
    predict_volume,
    resolve_inputs,
)

__all__ = [
    "PredictReport",
    "ProbeModel",
    "SegmentationModel",
    "VolumePrediction",
    "case_name",
    "load_model",
    "load_probe",
    "predict_files",
    "predict_volume",
    "resolve_inputs",
    "save_probe",
    "save_segmenter",
]
