"""Safetensors-only pretrained loading for the ``ddpm_ct_unet*`` timm models.

timm's Hub loader falls back to unpickling ``pytorch_model.bin`` when ``model.safetensors`` is missing.
The model entry points call :func:`prepare_timm_pretrained` first, which (1) pins timm's file name to
``model.safetensors`` (``hf_hub_filename``), so no pickle file is ever requested, and (2) for Hub
weights downloads and validates the file before timm reads it (content hash, safetensors header), so a
pickle-only repo, a corrupted download or offline mode without a cache fails with a clear
:class:`~smp_diffusion_encoder.errors.WeightsError`; timm then reads the same cached file.

Example:
    >>> kwargs = prepare_timm_pretrained(False, {})
    >>> kwargs["pretrained_cfg_overlay"]["hf_hub_filename"]
    'model.safetensors'
"""

from __future__ import annotations

from typing import Any

from smp_diffusion_encoder.hub.weights import WEIGHTS_NAME, fetch_weights_file


def prepare_timm_pretrained(pretrained: bool, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Return ``kwargs`` for ``build_model_with_cfg`` with safetensors-only, pre-validated Hub weights."""
    kwargs = dict(kwargs)
    kwargs["pretrained_cfg_overlay"] = {**(kwargs.get("pretrained_cfg_overlay") or {}), "hf_hub_filename": WEIGHTS_NAME}
    cfg = kwargs.get("pretrained_cfg")
    cfg = cfg if isinstance(cfg, dict) else getattr(cfg, "__dict__", {})
    hub_id = cfg.get("hf_hub_id") if cfg.get("source") == "hf-hub" else None
    if pretrained and hub_id:
        repo, _, revision = str(hub_id).partition("@")
        fetch_weights_file(repo, revision=revision or None)
    return kwargs
