"""The weights-folder format and its I/O: save, load, push, download, cache, export; safe by construction.

* :mod:`.weights`: the folder (``config.json`` + ``model.safetensors`` + ``README.md``) that smp, timm and
  this package all load: :func:`save_encoder_weights`, :func:`load_encoder_weights`.
* :mod:`.export`: a pretraining run -> such a folder (:func:`export_encoder`).
* :mod:`.push`: publish a folder, get the 40-hex commit to pin; :mod:`.download`: one file via the cache.
* :mod:`.pretrained`: whole fine-tuned smp models without re-downloads (:func:`save_finetuned`,
  :func:`load_finetuned`).
* :mod:`.packaged`: seeding packaged default weights into the HF cache, offline.

Which names smp and timm know, and which weights they load by default, is decided in
:mod:`smp_diffusion_encoder.registry`. Only safetensors are ever read; pickle files (``pytorch_model.bin``,
``*.pt``, ``*.pth``) are refused.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "card": ["render_model_card"],
        "download": ["download_file"],
        "export": ["export_encoder"],
        "packaged": ["seed_hf_cache", "seed_packaged_weights"],
        "pretrained": ["load_finetuned", "save_finetuned"],
        "push": ["push_encoder_weights", "push_folder"],
        "weights": ["build_config", "hash_folder", "load_encoder_weights", "save_encoder_weights"],
    },
)
