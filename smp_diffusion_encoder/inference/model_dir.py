"""The model folders ``predict`` runs are a format (:mod:`smp_diffusion_encoder.formats.model_folder`) and
:class:`~smp_diffusion_encoder.heads.ProbeModel` is a head; their names stay importable from here."""

from smp_diffusion_encoder.formats.model_folder import (
    POSTPROCESSING_NAME,
    PREPROCESSING_NAME,
    PROBE_FORMAT,
    PROBE_FORMAT_VERSION,
    Segmenter,
    load_model,
    load_probe,
    read_postprocessing,
    save_probe,
    save_segmenter,
    write_postprocessing,
)
from smp_diffusion_encoder.heads.probe_model import HeadKind, ProbeModel

__all__ = [
    "POSTPROCESSING_NAME",
    "PREPROCESSING_NAME",
    "PROBE_FORMAT",
    "PROBE_FORMAT_VERSION",
    "HeadKind",
    "ProbeModel",
    "Segmenter",
    "load_model",
    "load_probe",
    "read_postprocessing",
    "save_probe",
    "save_segmenter",
    "write_postprocessing",
]
