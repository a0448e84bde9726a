"""Every folder format on disk, one module each, read and written nowhere else.

=====================  =============================================================================
module                 format
=====================  =============================================================================
:mod:`.folder`         what they share: ``config.json`` + ``model.safetensors`` (+ ``README.md``); the one
                       reader and writer, and the one resolver "local folder or Hub snapshot"
:mod:`.encoder_weights`  the encoder weights folder smp, timm and this package load (:func:`save_encoder_weights`,
                       :func:`load_encoder_weights`, :func:`open_encoder_weights`); :mod:`.card` its model card
:mod:`.packaged`       the default weights shipped in the package, seeded into the Hugging Face cache offline
:mod:`.model_folder`   the fine-tuned model folder ``predict`` runs: a whole smp model, a probe or an ensemble
                       (:func:`save_segmenter`, :func:`save_probe`, :func:`load_model`, :func:`save_finetuned`,
                       :func:`load_finetuned`)
:mod:`.run_folder`     the pretraining run folder (:func:`load_run`; the names the training loop writes)
:mod:`.export`         a run folder -> an encoder weights folder (:func:`export_encoder`)
=====================  =============================================================================

Only safetensors are ever read. The Hub itself (push, download) is :mod:`smp_diffusion_encoder.hub`; which
names smp and timm know, and which weights they load, is :mod:`smp_diffusion_encoder.registry`.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "card": ["render_model_card"],
        "encoder_weights": [
            "EncoderWeights",
            "build_config",
            "load_encoder_weights",
            "open_encoder_weights",
            "save_encoder_weights",
        ],
        "export": ["export_encoder"],
        "folder": ["Folder", "open_folder", "read_safetensors"],
        "model_folder": [
            "Segmenter",
            "load_ensemble",
            "load_finetuned",
            "load_model",
            "load_probe",
            "read_postprocessing",
            "save_ensemble",
            "save_finetuned",
            "save_probe",
            "save_segmenter",
            "write_postprocessing",
        ],
        "packaged": ["hash_folder", "seed_hf_cache", "seed_packaged_weights"],
        "run_folder": ["RunInfo", "load_run", "milestones"],
    },
)
