"""The Hugging Face Hub: publish a folder and get the 40-hex commit to pin, or download one file.

* :mod:`.push`: :func:`push_folder` (any folder of ``config.json`` + ``model.safetensors``),
  :func:`push_encoder_weights` (an encoder weights folder, validated first).
* :mod:`.download`: :func:`download_file`, one file through the Hugging Face cache.

The folders themselves (encoder weights, fine-tuned models, packaged defaults, pretraining runs) are
:mod:`smp_diffusion_encoder.formats`; their loaders take a local folder or a Hub repo alike. The names that used to
live here (``save_encoder_weights``, ``load_finetuned``, ...) still work from here, with a
``DeprecationWarning`` naming their new home.
"""

from __future__ import annotations

import warnings
from typing import Any

import lazy_loader as _lazy

_getattr, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "download": ["download_file"],
        "push": ["push_encoder_weights", "push_folder"],
    },
)

#: Names that moved to :mod:`smp_diffusion_encoder.formats` in 0.2 -> their module there.
_MOVED = {
    "build_config": "encoder_weights",
    "load_encoder_weights": "encoder_weights",
    "save_encoder_weights": "encoder_weights",
    "render_model_card": "card",
    "export_encoder": "export",
    "hash_folder": "packaged",
    "seed_hf_cache": "packaged",
    "seed_packaged_weights": "packaged",
    "load_finetuned": "model_folder",
    "save_finetuned": "model_folder",
}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import smp_diffusion_encoder.formats as formats

        warnings.warn(
            f"smp_diffusion_encoder.hub.{name} moved to smp_diffusion_encoder.formats.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(formats, name)
    return _getattr(name)
