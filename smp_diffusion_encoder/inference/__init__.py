"""Inference: model folders (whole smp models, probes) and whole-volume prediction to NIfTI, NRRD, MHA or DICOM SEG."""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "model_dir": [
            "ProbeModel",
            "Segmenter",
            "load_model",
            "load_probe",
            "read_postprocessing",
            "save_probe",
            "save_segmenter",
            "write_postprocessing",
        ],
        "postprocess": ["PostprocessingConfig", "keep_largest_components", "smooth_along_z"],
        "volume": [
            "PredictReport",
            "VolumePrediction",
            "case_name",
            "predict_files",
            "predict_volume",
            "resolve_inputs",
        ],
    },
)
