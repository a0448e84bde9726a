"""Hub weights under native smp names: ``smp.Unet("ddpm-ct", encoder_weights="mykey")``.

smp loads encoder weights itself (``hf_hub_download`` of ``config.json`` + ``model.safetensors`` at the
registered revision, then a strict ``load_state_dict``). These functions only add a validated
``pretrained_settings`` entry, pinned to a 40-hex commit, and by default pre-download the files so that
(a) problems surface here as :class:`WeightsError` and (b) the later smp call makes no request.

Example:
    >>> import segmentation_models_pytorch as smp
    >>> register_hub_weights("ddpm-ct", "my-org/ddpm-ct-flare", revision="0123abcd" * 5, key="flare")  # doctest: +SKIP
    >>> model = smp.Unet("ddpm-ct", encoder_weights="flare", in_channels=1, classes=14)              # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import segmentation_models_pytorch.encoders as smp_encoders

from smp_diffusion_encoder.encoder.features import FeatureConfig
from smp_diffusion_encoder.encoder.registry import register_encoder
from smp_diffusion_encoder.encoder.smp_encoder import DDPMEncoder
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.hub.download import download_file, is_commit
from smp_diffusion_encoder.hub.weights import CONFIG_NAME, fetch_weights_file, read_config
from smp_diffusion_encoder.models.config import UNetConfig


def register_hub_weights(
    name: str, repo_id: str, *, revision: str, key: str, prefetch: bool = True
) -> dict[str, str]:
    """Add ``key`` -> ``repo_id@revision`` to the weights of registered ddpm-ct encoder ``name``.

    The repo's ``config.json`` must describe exactly the architecture registered under ``name``
    (U-Net and feature config), otherwise :class:`WeightsError` lists the differing fields. With
    ``prefetch`` (default) ``model.safetensors`` is downloaded and validated now. Returns the setting.

    Example:
        >>> register_hub_weights("ddpm-ct-tiny", "my-org/tiny", revision="ab" * 20, key="mine")  # doctest: +SKIP
        {'repo_id': 'my-org/tiny', 'revision': 'abab...'}
    """
    entry = smp_encoders.encoders.get(name)
    if entry is None or entry["encoder"] is not DDPMEncoder:
        raise ConfigError(f"{name!r} is not a registered ddpm-ct smp encoder")
    config = _fetch_config(repo_id, revision)
    diff = _differences(entry["params"], config["model_args"])
    if diff:
        raise WeightsError(
            f"{repo_id}@{revision}: config.json describes a different architecture than encoder {name!r} "
            f"({'; '.join(diff)}); use register_encoder_from_hub() to register it under a new name"
        )
    if prefetch:
        fetch_weights_file(repo_id, revision=revision)
    setting = {"repo_id": repo_id, "revision": revision}
    entry["pretrained_settings"][key] = dict(setting)
    return setting


def register_encoder_from_hub(
    name: str, repo_id: str, *, revision: str, key: str = "ct", prefetch: bool = True
) -> str:
    """Register a NEW smp encoder ``name`` built from the repo's ``config.json`` ``model_args``.

    Its only weights key is ``key``, so ``smp.Unet(name, encoder_weights=key)`` loads the repo's weights.

    Example:
        >>> register_encoder_from_hub("ddpm-ct-flare", "my-org/ddpm-ct-flare", revision="ab" * 20)  # doctest: +SKIP
        'ddpm-ct-flare'
    """
    config = _fetch_config(repo_id, revision)
    args = config["model_args"]
    try:
        unet = UNetConfig.from_dict(args["unet"])
        features = FeatureConfig.from_dict(args.get("features") or {})
    except (ConfigError, KeyError, TypeError) as err:
        raise WeightsError(f"{repo_id}@{revision}/{CONFIG_NAME}: invalid model_args ({err})") from err
    if prefetch:
        fetch_weights_file(repo_id, revision=revision)
    register_encoder(name, unet, features, {key: {"repo_id": repo_id, "revision": revision}})
    return name


def _fetch_config(repo_id: str, revision: str) -> dict[str, Any]:
    if not is_commit(revision):
        raise ConfigError(
            f"revision {revision!r} of {repo_id} is not a 40-hex commit id; weights registered in code are "
            f"pinned to a commit (push_encoder_weights() returns it; `hf api` / the Hub page shows it)"
        )
    path = download_file(repo_id, CONFIG_NAME, revision=revision)
    return read_config(path, source=f"{repo_id}@{revision}")


def _differences(params: dict[str, Any], model_args: dict[str, Any]) -> list[str]:
    out = []
    for part in ("unet", "features"):
        want, got = params.get(part, {}), (model_args.get(part) or {})
        if part == "features":
            got = FeatureConfig.from_dict(got).to_dict() if isinstance(got, dict) else got
        for k in sorted(set(want) | set(got)):
            if want.get(k) != got.get(k):
                out.append(f"{part}.{k}: encoder {want.get(k)!r}, repo {got.get(k)!r}")
    return out
