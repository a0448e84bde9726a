"""Weights of registered names: add Hub weights under a name, and read what a name's weights hold.

* :func:`register_encoder_from_folder`: a local weights folder under an smp name.
* :func:`register_hub_weights` / :func:`register_encoder_from_hub`: Hub weights under an smp name
  (``smp.Unet("ddpm-ct", encoder_weights="mykey")``). smp loads encoder weights itself
  (``hf_hub_download`` of ``config.json`` + ``model.safetensors`` at the registered revision, then a strict
  ``load_state_dict``); these functions validate the repo against the name's architecture, pin it to a
  40-hex commit and by default pre-download the files, so problems surface here as :class:`WeightsError`
  and the later smp call makes no request.
* :func:`load_encoder`: one call gives the encoder of a name with its weights (the folder read once) and their
  preprocessing attached as ``encoder.pretrained_cfg`` (:class:`PretrainedCfg`), as timm models carry theirs;
  fine-tuning and feature selection take the preprocessing from there. :func:`resolve_weights`,
  :func:`preprocessing_for` and :func:`load_weights` answer one of those questions each, from the same reader.

Example:
    >>> import segmentation_models_pytorch as smp
    >>> register_hub_weights("ddpm-ct", "my-org/ddpm-ct-flare", revision="0123abcd" * 5, key="flare")  # doctest: +SKIP
    >>> model = smp.Unet("ddpm-ct", encoder_weights="flare", in_channels=1, classes=14)              # doctest: +SKIP
    >>> encoder = load_encoder("ddpm-ct-tiny", None)        # random weights: the preprocessing for its size
    >>> encoder.pretrained_cfg.weights, encoder.pretrained_cfg.preprocessing.image_size
    (None, 64)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from smp_diffusion_encoder._hub import is_commit
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.encoder.features import DiffusionFeatureEncoder
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.formats.encoder_weights import EncoderWeights, open_encoder_weights
from smp_diffusion_encoder.models.unet import DiffusionUNet
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
    weights = _open_hub(repo_id, revision)
    diff = record.spec.differences(weights.spec)
    if diff:
        raise WeightsError(
            f"{repo_id}@{revision}: config.json describes a different architecture than encoder {name!r} "
            f"({'; '.join(diff)}; encoder vs repo); use register_encoder_from_hub() to register it under a new name"
        )
    if prefetch:
        _ = weights.folder.weights_path  # downloaded and checked now: the later smp call makes no request
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
    weights = _open_hub(repo_id, revision)
    if prefetch:
        _ = weights.folder.weights_path  # downloaded and checked now
    smp_names.register_encoder(name, weights.spec.unet, weights.spec.features, {key: HubWeights(repo_id, revision)})
    return name


def register_encoder_from_folder(name: str, folder: str | os.PathLike[str], *, key: str = "ct") -> str:
    """Register smp encoder ``name`` with the architecture and weights of a local weights folder (``config.json``
    + ``model.safetensors``, e.g. written by :func:`~smp_diffusion_encoder.formats.export.export_encoder`).

    ``smp.Unet(name, encoder_weights=key)`` then loads the folder's weights offline (seeded into the Hugging
    Face cache at a content revision the first time they are asked for), and fine-tuning with ``encoder=name``
    uses the folder's preprocessing. timm loads such a folder without registration:
    ``timm.create_model("local-dir:FOLDER", pretrained=True)``.

    Example:
        >>> register_encoder_from_folder("ddpm-ct-mine", "weights/ddpm-ct-mine")                    # doctest: +SKIP
        'ddpm-ct-mine'
    """
    folder = Path(folder)
    weights = open_encoder_weights(folder, require_preprocessing=True)  # fine-tuning needs the preprocessing
    weights.state_dict()  # refuse unreadable weights now, not when smp first asks for them
    source = PackagedWeights(folder.resolve(), f"{PACKAGED_ORG}-local/{name}")
    smp_names.register_encoder(name, weights.spec.unet, weights.spec.features, {key: source})
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


@dataclass(frozen=True)
class PretrainedCfg:
    """What an encoder's weights come with, attached as ``encoder.pretrained_cfg`` by :func:`load_encoder`.

    Attributes:
        encoder: the encoder's name; ``spec`` its architecture (``None`` for an encoder that is not ours).
        weights: the weights key loaded (``None``: random initialization).
        source: where the weights came from, for messages (``"random initialization"`` without weights).
        preprocessing: how CT becomes the encoder's input: from the weights' ``config.json``, else the default
            for the U-Net's image size (256 for encoders that are not ours).
    """

    encoder: str
    weights: str | None
    source: str
    preprocessing: PreprocessingConfig
    spec: EncoderSpec | None = None


def load_encoder(name: str, weights: str | None = "auto", *, image_size: int | None = None) -> nn.Module:
    """The encoder ``name`` with its ``weights`` loaded and ``encoder.pretrained_cfg`` (:class:`PretrainedCfg`) set.

    For a ``ddpm-ct`` name: a :class:`~smp_diffusion_encoder.encoder.features.DiffusionFeatureEncoder` whose U-Net
    stops after the last feature block (what a weights folder holds), weights read once from their folder
    (packaged or a pinned Hub snapshot) and checked against the name's architecture. For any other smp encoder
    (e.g. ``resnet34`` for baselines): smp's own, with the default preprocessing. ``weights``: a key of the
    name's weights, ``"auto"`` (its default CT weights when it has them, else random) or ``None`` (random).
    ``image_size`` overrides the preprocessing's size (see :func:`preprocessing_for`).

    Example:
        >>> encoder = load_encoder("ddpm-ct-tiny", None, image_size=32)
        >>> encoder.pretrained_cfg.preprocessing.image_size, encoder.strides[:3]
        (32, (1, 2, 4))
    """
    cfg, opened = _pretrained(name, weights, image_size)
    if cfg.spec is None:
        import segmentation_models_pytorch as smp

        encoder = smp.encoders.get_encoder(name, in_channels=1, weights=cfg.weights)
    else:
        encoder = DiffusionFeatureEncoder(DiffusionUNet(cfg.spec.unet), cfg.spec.features)
        encoder.unet.truncate(max(encoder.blocks))
        if opened is not None:
            encoder.load_state_dict(opened.state_dict())
    encoder.pretrained_cfg = cfg
    return encoder


def use_pretrained(module: nn.Module, encoder: nn.Module) -> nn.Module:
    """Give ``module`` (an encoder built without weights, e.g. an smp model's ``encoder`` or a
    :class:`~smp_diffusion_encoder.heads.ProbeModel`'s) the weights and ``pretrained_cfg`` of ``encoder`` from
    :func:`load_encoder`; random weights (``weights=None``) are left as ``module`` drew them. Returns ``module``.

    ``smp.create_model(arch, encoder_name=name, encoder_weights=None, ...)`` then :func:`use_pretrained` gives the
    same model as ``encoder_weights=key`` (the decoder draws the same random numbers) without reading the
    weights a second time.
    """
    cfg = encoder.pretrained_cfg
    if cfg.weights is not None:
        try:
            module.load_state_dict(encoder.state_dict())
        except RuntimeError as err:
            raise WeightsError(f"{cfg.source} do not fit {type(module).__name__} ({err})") from err
    module.pretrained_cfg = cfg
    return module


def preprocessing_for(encoder: str, encoder_weights: str | None, image_size: int | None = None) -> PreprocessingConfig:
    """The preprocessing an encoder expects: from its weights' ``config.json``, else the default for its size.

    ``image_size`` overrides the size (the HU window and pixel spacing come from the weights, or the
    defaults; a new size keeps a recorded field of view's spacing only for legacy weights, which have
    none). An encoder that is not ours (e.g. smp's ``resnet34``, for baselines) gets the default
    preprocessing at ``image_size`` (default 256).
    """
    return _pretrained(encoder, encoder_weights, image_size)[0].preprocessing


def load_weights(encoder: str, encoder_weights: str) -> dict[str, torch.Tensor]:
    """The state dict (``unet.*`` keys, checked against the architecture) of ``encoder``'s weights ``key``."""
    return open_weights(resolve(encoder), encoder_weights).state_dict()


def open_weights(record: EncoderRecord, key: str) -> EncoderWeights:
    """The weights folder of ``record``'s weights ``key`` (packaged, or a Hub snapshot at its pinned commit),
    checked to hold exactly the record's architecture; its state dict is read on demand."""
    if key not in record.weights:
        raise WeightsError(f"encoder {record.smp_name!r} has no weights {key!r}; available: {sorted(record.weights)}")
    source = record.weights[key]
    if isinstance(source, PackagedWeights):
        opened = open_encoder_weights(source.folder)
    else:
        opened = _open_hub(source.repo_id, source.revision)
    differences = record.spec.differences(opened.spec)
    if differences:
        raise WeightsError(
            f"{record.smp_name} weights {key!r} ({source.describe()}) do not match the encoder: "
            + "; ".join(differences)
        )
    return opened


def _pretrained(name: str, weights: str | None, image_size: int | None) -> tuple[PretrainedCfg, EncoderWeights | None]:
    """The :class:`PretrainedCfg` of ``name`` with ``weights`` (``"auto"`` resolved), and the opened folder."""
    key = resolve_weights(name, weights)
    try:
        record = resolve(name)
    except KeyError:
        return PretrainedCfg(
            name,
            key,
            f"smp weights {key!r}" if key else "random initialization",
            PreprocessingConfig(image_size=image_size or 256),
        ), None
    if key is None:
        prep = PreprocessingConfig(image_size=image_size or record.spec.unet.image_size)
        return PretrainedCfg(record.smp_name, None, "random initialization", prep, record.spec), None
    opened = open_weights(record, key)
    source = f"{record.smp_name} weights {key!r} ({record.weights[key].describe()})"
    prep = opened.preprocessing
    if prep is None:
        raise WeightsError(f"{source}: {opened.source}/config.json records no 'preprocessing' (HU window, image size)")
    if image_size is not None and image_size != prep.image_size:
        prep = PreprocessingConfig(prep.hu_window, image_size, None if prep.spacing_mm is None else "auto")
    return PretrainedCfg(record.smp_name, key, source, prep, record.spec), opened


def _open_hub(repo_id: str, revision: str) -> EncoderWeights:
    if not is_commit(revision):
        raise ConfigError(
            f"revision {revision!r} of {repo_id} is not a 40-hex commit id; weights registered in code are "
            f"pinned to a commit (push_encoder_weights() returns it; `hf api` / the Hub page shows it)"
        )
    return open_encoder_weights(repo_id, revision=revision)
