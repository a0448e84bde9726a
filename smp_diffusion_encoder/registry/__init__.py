"""What an encoder name means, and every write to smp's and timm's registries (one home for both).

- :mod:`.records`: :class:`EncoderRecord` per name, :func:`resolve` (plain data, no torch).
- :mod:`.smp_names`: records -> ``segmentation_models_pytorch.encoders.encoders``; :func:`register_encoder`.
- :mod:`.timm_names`: the ``ddpm_ct_unet*`` timm entry points and default configs.
- :mod:`.weights`: Hub weights under a name (:func:`register_hub_weights`, :func:`register_encoder_from_hub`)
  and what a name's weights hold (:func:`preprocessing_for`, :func:`load_weights`, :func:`resolve_weights`).
- :mod:`.hooks`: :func:`install` (run by ``import smp_diffusion_encoder``): the writers run when smp / timm
  are imported.
"""

import lazy_loader as _lazy

__getattr__, __dir__, __all__ = _lazy.attach(
    __name__,
    submod_attrs={
        "records": ["EncoderRecord", "HubWeights", "PackagedWeights", "all_records", "resolve"],
        "smp_names": ["register_encoder"],
        "weights": [
            "load_weights",
            "preprocessing_for",
            "register_encoder_from_folder",
            "register_encoder_from_hub",
            "register_hub_weights",
            "resolve_weights",
        ],
        "hooks": ["install"],
    },
)
