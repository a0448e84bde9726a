"""The ``ddpm_ct_unet*`` timm models: default configs and ``@register_model`` entry points (timm's registry
is written here and nowhere else).

Each built-in variant with a timm name (:mod:`.records`) gets an entry point building
:class:`~smp_diffusion_encoder.encoder.timm_model.DDPMCTUNet` with its architecture. Pretrained weights are
safetensors only: the entry point first pins timm's file name to ``model.safetensors`` (so no pickle file
is ever requested) and, for Hub weights, downloads and validates the file before timm reads it (content
hash, safetensors header), so a pickle-only repo or a corrupted download fails at once with a
:class:`~smp_diffusion_encoder.errors.WeightsError` that names the repo. A variant with packaged default
weights points timm's ``file`` at them: ``pretrained=True`` loads them offline.

``timm.create_model("hf-hub:ORG/REPO@REV")`` reads the repo's ``config.json`` before it calls any entry point
(the file names the architecture), and timm offers no hook there. So that a missing cache fails as clearly
as our own paths do, :func:`install_hub_config_errors` wraps the one function timm's factory calls for it
(``timm.models._factory.load_model_config_from_hf``): huggingface_hub's "not in the cache" errors (offline
mode, or the Hub unreachable) become a :class:`~smp_diffusion_encoder.hub.download.NotCachedError`, a
``WeightsError`` naming the repo and the command that fills the cache (``hf download ORG/REPO --revision
REV``). It is also a ``LocalEntryNotFoundError`` (what timm raised before), so code catching that, for any
repo, behaves as before; nothing else changes, and a warm cache loads with zero requests as before.

Example:
    >>> import timm
    >>> timm.create_model("ddpm_ct_unet_tiny", features_only=True).feature_info.reduction()
    [1, 2, 4, 8, 16, 32]
"""

from __future__ import annotations

import functools
from typing import Any

import timm.models._factory as timm_factory
from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from smp_diffusion_encoder.encoder.timm_model import DDPMCTUNet
from smp_diffusion_encoder.hub.download import not_cached_error
from smp_diffusion_encoder.hub.weights import CONFIG_NAME, WEIGHTS_NAME, fetch_weights_file
from smp_diffusion_encoder.registry.records import all_records, resolve


def _cfg(timm_name: str) -> dict[str, Any]:
    record = resolve(timm_name)
    size, packaged = record.spec.unet.image_size, record.packaged
    return {
        "num_classes": 0,
        "input_size": (record.spec.unet.in_channels, size, size),
        "pool_size": (size, size),  # forward_features is the stride-1 map (the trunk's last)
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5,),
        "std": (0.5,),
        "first_conv": "unet.input_blocks.0.0",
        "classifier": "head",
        "license": "apache-2.0",
        **({"file": str(packaged.folder / WEIGHTS_NAME)} if packaged else {}),
    }


default_cfgs = generate_default_cfgs({r.timm_name: _cfg(r.timm_name) for r in all_records() if r.timm_name})


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


def _create(timm_name: str, pretrained: bool = False, **kwargs: Any) -> DDPMCTUNet:
    spec = resolve(timm_name).spec
    kwargs.setdefault("unet", spec.unet.to_dict())
    kwargs.setdefault("features", spec.features.to_dict())
    kwargs = prepare_timm_pretrained(pretrained, kwargs)
    return build_model_with_cfg(
        DDPMCTUNet, timm_name, pretrained, feature_cfg=dict(feature_cls="getter", out_indices=tuple(range(6))), **kwargs
    )


@register_model
def ddpm_ct_unet(pretrained: bool = False, **kwargs: Any) -> DDPMCTUNet:
    """``small`` diffusion U-Net pretrained on CT (the ``ddpm-ct`` smp encoder)."""
    return _create("ddpm_ct_unet", pretrained, **kwargs)


@register_model
def ddpm_ct_unet_adm256(pretrained: bool = False, **kwargs: Any) -> DDPMCTUNet:
    """The paper's 256x256 ADM backbone (~553 M parameters before truncation)."""
    return _create("ddpm_ct_unet_adm256", pretrained, **kwargs)


@register_model
def ddpm_ct_unet_tiny(pretrained: bool = False, **kwargs: Any) -> DDPMCTUNet:
    """Tiny U-Net for tests and smoke runs."""
    return _create("ddpm_ct_unet_tiny", pretrained, **kwargs)


def install_hub_config_errors() -> None:
    """Make timm's ``hf-hub:`` config read raise :class:`~smp_diffusion_encoder.hub.download.NotCachedError`
    (naming the repo and the ``hf download`` command) when the file is not cached and cannot be downloaded.

    Idempotent. If a future timm no longer has the function, nothing is wrapped and timm's own error stays
    (``tests/hub/test_hub_download.py`` then fails, so the documentation cannot silently drift).
    """
    original = getattr(timm_factory, "load_model_config_from_hf", None)
    if original is None or getattr(original, "__wrapped_by_smp_diffusion__", False):
        return

    @functools.wraps(original)
    def load_model_config_from_hf(model_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(model_id, *args, **kwargs)
        except (LocalEntryNotFoundError, OfflineModeIsEnabled) as err:
            repo, _, revision = model_id.partition("@")
            cache_dir = kwargs.get("cache_dir") or (args[0] if args else None)
            raise not_cached_error(
                repo, CONFIG_NAME, revision=revision or None, cache_dir=None if cache_dir is None else str(cache_dir)
            ) from err

    load_model_config_from_hf.__wrapped_by_smp_diffusion__ = True  # type: ignore[attr-defined]
    timm_factory.load_model_config_from_hf = load_model_config_from_hf


install_hub_config_errors()
