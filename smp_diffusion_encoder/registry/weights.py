"""Weights of registered names: add Hub weights under a name, and read what a name's weights hold.

* :func:`register_encoder_from_folder`: a local weights folder under an smp name.
* :func:`register_hub_weights` / :func:`register_encoder_from_hub`: Hub weights under an smp name
  (``smp.Unet("ddpm-ct", encoder_weights="mykey")``). smp loads encoder weights itself
  (``hf_hub_download`` of ``config.json`` + ``model.safetensors`` at the registered revision, then a strict
  ``load_state_dict``); these functions validate the repo against the name's architecture, pin it to a
  40-hex commit and by default pre-download the files, so problems surface here as :class:`WeightsError`
  and the later smp call makes no request.
* :func:`resolve_weights`, :func:`preprocessing_for`, :func:`load_weights`: what fine-tuning asks of a name
  (which key is the default, the preprocessing the weights were trained with, the state dict).

Example:
    >>> import segmentation_models_pytorch as smp
    >>> register_hub_weights("ddpm-ct", "my-org/ddpm-ct-flare", revision="0123abcd" * 5, key="flare")  # doctest: +SKIP
    >>> model = smp.Unet("ddpm-ct", encoder_weights="flare", in_channels=1, classes=14)              # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.features import encoder_state_dict
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.hub.download import download_file, is_commit
from smp_diffusion_encoder.hub.weights import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    config_preprocessing,
    config_spec,
    fetch_weights_file,
    read_config,
    read_safetensors,
)
from smp_diffusion_encoder.registry import smp_names
from smp_diffusion_encoder.registry.records import (
    PACKAGED_ORG,
    EncoderRecord,
    HubWeights,
    PackagedWeights,
    put,
    resolve,
)


def register_hub_weights(name: str, repo_id: str, *, revision: str, key: str, prefetch: bool = True) -> HubWeights:
    """Add ``key`` -> ``repo_id@revision`` to the weights of registered encoder ``name``.

    The repo's ``config.json`` must describe exactly the architecture registered under ``name``,
    otherwise :class:`WeightsError` lists the differing fields. With ``prefetch`` (default)
    ``model.safetensors`` is downloaded and validated now.

    Example:
        >>> register_hub_weights("ddpm-ct-tiny", "my-org/tiny", revision="ab" * 20, key="mine")  # doctest: +SKIP
        HubWeights(repo_id='my-org/tiny', revision='abab...')
    """
    try:
        record = resolve(name)
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None
    config = _fetch_config(repo_id, revision)
    diff = record.spec.differences(config_spec(config, source=f"{repo_id}@{revision}"))
    if diff:
        raise WeightsError(
            f"{repo_id}@{revision}: config.json describes a different architecture than encoder {name!r} "
            f"({'; '.join(diff)}; encoder vs repo); use register_encoder_from_hub() to register it under a new name"
        )
    if prefetch:
        fetch_weights_file(repo_id, revision=revision)
    source = HubWeights(repo_id, revision)
    smp_names.write(put(record.with_weights(key, source)))
    return source


def register_encoder_from_hub(name: str, repo_id: str, *, revision: str, key: str = "ct", prefetch: bool = True) -> str:
    """Register a NEW smp encoder ``name`` built from the repo's ``config.json`` ``model_args``.

    Its only weights key is ``key``, so ``smp.Unet(name, encoder_weights=key)`` loads the repo's weights.

    Example:
        >>> register_encoder_from_hub("ddpm-ct-flare", "my-org/ddpm-ct-flare", revision="ab" * 20)  # doctest: +SKIP
        'ddpm-ct-flare'
    """
    config = _fetch_config(repo_id, revision)
    spec = config_spec(config, source=f"{repo_id}@{revision}")
    if prefetch:
        fetch_weights_file(repo_id, revision=revision)
    smp_names.register_encoder(name, spec.unet, spec.features, {key: HubWeights(repo_id, revision)})
    return name


def register_encoder_from_folder(name: str, folder: str | os.PathLike[str], *, key: str = "ct") -> str:
    """Register smp encoder ``name`` with the architecture and weights of a local weights folder (``config.json``
    + ``model.safetensors``, e.g. written by :func:`~smp_diffusion_encoder.hub.export.export_encoder`).

    ``smp.Unet(name, encoder_weights=key)`` then loads the folder's weights offline (seeded into the Hugging
    Face cache at a content revision the first time they are asked for), and fine-tuning with ``encoder=name``
    uses the folder's preprocessing. timm loads such a folder without registration:
    ``timm.create_model("local-dir:FOLDER", pretrained=True)``.

    Example:
        >>> register_encoder_from_folder("ddpm-ct-mine", "weights/ddpm-ct-mine")                    # doctest: +SKIP
        'ddpm-ct-mine'
    """
    folder = Path(folder)
    config = read_config(folder / CONFIG_NAME, source=str(folder))
    spec = config_spec(config, source=str(folder))
    config_preprocessing(config, source=str(folder))  # fine-tuning needs it: refuse a folder without it now
    read_safetensors(folder / WEIGHTS_NAME, source=str(folder / WEIGHTS_NAME))
    source = PackagedWeights(folder.resolve(), f"{PACKAGED_ORG}-local/{name}")
    smp_names.register_encoder(name, spec.unet, spec.features, {key: source})
    return name


def resolve_weights(encoder: str, encoder_weights: str | None) -> str | None:
    """``"auto"`` -> ``"ct"`` for a registered encoder that has default CT weights, else ``None``; any other
    value is returned unchanged (smp encoders such as ``resnet34`` are not ours: ``"auto"`` means random)."""
    if encoder_weights != "auto":
        return encoder_weights
    try:
        return resolve(encoder).default_weights
    except KeyError:
        return None


def preprocessing_for(encoder: str, encoder_weights: str | None, image_size: int | None = None) -> PreprocessingConfig:
    """The preprocessing an encoder expects: from its weights' ``config.json``, else the default for its size.

    ``image_size`` overrides the size (the HU window and pixel spacing come from the weights, or the
    defaults; a new size keeps a recorded field of view's spacing only for legacy weights, which have
    none). An encoder that is not ours (e.g. smp's ``resnet34``, for baselines) gets the default
    preprocessing at ``image_size`` (default 256).
    """
    try:
        record = resolve(encoder)
    except KeyError:
        return PreprocessingConfig(image_size=image_size or 256)
    if encoder_weights is None:
        return PreprocessingConfig(image_size=image_size or record.spec.unet.image_size)
    config = _weights_config(record, encoder_weights)
    prep = config_preprocessing(config, source=_describe(record, encoder_weights))
    if image_size is None or image_size == prep.image_size:
        return prep
    return PreprocessingConfig(prep.hu_window, image_size, None if prep.spacing_mm is None else "auto")


def load_weights(encoder: str, encoder_weights: str) -> dict[str, torch.Tensor]:
    """The state dict (``unet.*`` keys, checked against the architecture) of ``encoder``'s weights ``key``."""
    record = resolve(encoder)
    source = _source(record, encoder_weights)
    where = _describe(record, encoder_weights)
    if isinstance(source, PackagedWeights):
        path = source.folder / WEIGHTS_NAME
    else:
        path = fetch_weights_file(source.repo_id, revision=source.revision)
    return encoder_state_dict(read_safetensors(path, source=str(path)), record.spec, source=where)


def _source(record: EncoderRecord, key: str) -> HubWeights | PackagedWeights:
    if key not in record.weights:
        raise WeightsError(f"encoder {record.smp_name!r} has no weights {key!r}; available: {sorted(record.weights)}")
    return record.weights[key]


def _describe(record: EncoderRecord, key: str) -> str:
    return f"{record.smp_name} weights {key!r} ({_source(record, key).describe()})"


def _weights_config(record: EncoderRecord, key: str) -> dict[str, Any]:
    source = _source(record, key)
    if isinstance(source, PackagedWeights):
        return read_config(source.folder / CONFIG_NAME, source=str(source.folder))
    return _fetch_config(source.repo_id, source.revision)


def _fetch_config(repo_id: str, revision: str) -> dict[str, Any]:
    if not is_commit(revision):
        raise ConfigError(
            f"revision {revision!r} of {repo_id} is not a 40-hex commit id; weights registered in code are "
            f"pinned to a commit (push_encoder_weights() returns it; `hf api` / the Hub page shows it)"
        )
    path = Path(download_file(repo_id, CONFIG_NAME, revision=revision))
    return read_config(path, source=f"{repo_id}@{revision}")
