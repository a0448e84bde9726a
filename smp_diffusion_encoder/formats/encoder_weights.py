"""The weights folder: ``config.json`` + ``model.safetensors`` + ``README.md``, loadable by smp AND timm.

Layout (one folder = one Hub repo)::

    config.json        architecture + model_args (timm's hf-hub loader), mean/std/input_range (smp),
                       preprocessing (HU window, image size), smp encoder name, format version
    model.safetensors  encoder-only state dict, keys ``unet.*``, strict-loadable by the ``ddpm-ct*`` smp
                       encoders and the ``ddpm_ct_unet*`` timm models
    README.md          model card (:mod:`.card`)

Read and written through :mod:`.folder` (safetensors only; a local folder or a Hub snapshot). The packaged
default weights (:mod:`.packaged`) and the output of ``smp-diffusion export`` (:mod:`.export`) are such folders.
Folders written before ``preprocessing.spacing_mm`` existed keep their whole-field-of-view preprocessing.

Example:
    >>> from smp_diffusion_encoder.encoder import EncoderSpec, FeaturePyramid, FeatureConfig
    >>> spec = EncoderSpec("tiny", FeatureConfig(timesteps=(50,)))
    >>> enc = FeaturePyramid(spec.unet, spec.features)
    >>> save_encoder_weights(enc, "out/tiny", spec, PreprocessingConfig(image_size=64), card={})  # doctest: +SKIP
    >>> state_dict, config = load_encoder_weights("out/tiny")                                    # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.encoder.features import FeaturePyramid, encoder_state_dict
from smp_diffusion_encoder.encoder.variants import VARIANTS
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.formats.card import render_model_card
from smp_diffusion_encoder.formats.folder import CONFIG_NAME, WEIGHTS_NAME, Folder, open_folder, write_folder

FORMAT_VERSION = 1
#: timm architectures a weights config may name: the built-in variants' (others come as model_args)
_TIMM_NAMES = frozenset(v.timm_name for v in VARIANTS)


def architecture_for(spec: EncoderSpec) -> tuple[str, str | None]:
    """``(timm architecture, smp encoder name or None)`` for an encoder architecture.

    A built-in variant with exactly this architecture gives both its names; any other architecture is
    built by the generic ``ddpm_ct_unet`` entry point from ``model_args`` (and has no smp name until
    :func:`~smp_diffusion_encoder.registry.register_encoder_from_hub`).
    """
    for v in VARIANTS:
        if not v.spec.differences(spec):
            return v.timm_name, v.smp_name
    return VARIANTS[0].timm_name, None


def build_config(
    spec: EncoderSpec, preprocessing: PreprocessingConfig, *, license: str | None = None
) -> dict[str, Any]:
    """The ``config.json`` dict: what timm's hf-hub loader, smp's ``get_preprocessing_params`` and we read.

    ``mean = std = 0.5`` on ``input_range [0, 1]`` maps smp's ``preprocess_input`` output to [-1, 1],
    the range the U-Net was trained on. ``input_space`` is read by smp only to flip BGR; ``"RGB"`` is a
    no-op for the single CT channel.
    """
    arch, smp_name = architecture_for(spec)
    with torch.device("meta"):
        num_features = FeaturePyramid(spec.unet, spec.features).channels[0]  # the timm model's final map: stride 1
    size, channels = preprocessing.image_size, spec.unet.in_channels
    return {
        "architecture": arch,
        "num_classes": 0,
        "num_features": num_features,
        "model_args": spec.to_dict(),
        "pretrained_cfg": {
            "input_size": [channels, size, size],
            "fixed_input_size": False,
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "mean": [0.5] * channels,
            "std": [0.5] * channels,
            "num_classes": 0,
            "first_conv": "unet.input_blocks.0.0",
            "classifier": "head",
            "hf_hub_filename": WEIGHTS_NAME,  # timm then never looks for pytorch_model.bin
            "license": license,
        },
        "mean": [0.5] * channels,
        "std": [0.5] * channels,
        "input_range": [0, 1],
        "input_space": "RGB",
        "preprocessing": preprocessing.to_dict(),
        "smp_encoder": smp_name,
        "format_version": FORMAT_VERSION,
    }


def save_encoder_weights(
    encoder_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    out_dir: str | os.PathLike[str],
    spec: EncoderSpec,
    preprocessing: PreprocessingConfig,
    *,
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` into ``out_dir`` (each atomically).

    ``encoder_or_state_dict`` is an smp encoder, a timm ``DDPMCTUNet`` or a state dict with ``unet.*``
    keys (a 1-channel stem adapted to more channels is NOT folded back: save the native model). It is
    checked strictly (names and shapes) against ``spec`` before anything is written
    (:func:`~smp_diffusion_encoder.encoder.features.encoder_state_dict`); tensors are stored contiguous, so
    channels-last weights save too. ``card`` fields (see :func:`render_model_card`) that are missing are
    written as "not recorded".

    Example:
        >>> save_encoder_weights(FeaturePyramid("tiny"), "w/tiny", EncoderSpec("tiny"),
        ...                      PreprocessingConfig(image_size=64), card={"license": "apache-2.0"})  # doctest: +SKIP
        PosixPath('w/tiny')
    """
    card = dict(card or {})
    config = build_config(spec, preprocessing, license=card.get("license"))
    sd = (
        encoder_or_state_dict.state_dict()
        if isinstance(encoder_or_state_dict, torch.nn.Module)
        else encoder_or_state_dict
    )
    sd = encoder_state_dict({k: v for k, v in sd.items() if k.startswith("unet.")}, spec, source=str(out_dir))
    return write_folder(out_dir, sd, config, card=render_model_card(config, card))


@dataclass(frozen=True)
class EncoderWeights:
    """An opened weights folder: what its ``config.json`` says, and its state dict on demand."""

    folder: Folder
    spec: EncoderSpec
    preprocessing: PreprocessingConfig | None

    @property
    def config(self) -> dict[str, Any]:
        return self.folder.config

    @property
    def source(self) -> str:
        return self.folder.source

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The encoder's ``unet.*`` tensors, checked strictly (names and shapes) against :attr:`spec`."""
        return encoder_state_dict(self.folder.state_dict(), self.spec, source=self.source)


def open_encoder_weights(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None, require_preprocessing: bool = False
) -> EncoderWeights:
    """Open a weights folder or Hub repo: its config is checked (a ``ddpm-ct`` architecture with
    ``model_args``) and parsed; the weights are read when :meth:`EncoderWeights.state_dict` is called."""
    folder = open_folder(path_or_repo, revision=revision, check=check_config)
    prep = (
        config_preprocessing(folder.config, source=folder.source)
        if require_preprocessing or "preprocessing" in folder.config
        else None
    )
    return EncoderWeights(folder, config_spec(folder.config, source=folder.source), prep)


def config_spec(config: Mapping[str, Any], *, source: str) -> EncoderSpec:
    """The :class:`EncoderSpec` of a weights ``config.json`` (its ``model_args``); :class:`WeightsError` if unusable."""
    try:
        return EncoderSpec.from_dict(config.get("model_args"))
    except ConfigError as err:
        raise WeightsError(f"{source}/{CONFIG_NAME}: no usable model_args ({err})") from err


def config_preprocessing(config: Mapping[str, Any], *, source: str) -> PreprocessingConfig:
    """The preprocessing recorded in a weights ``config.json``; :class:`WeightsError` if missing or invalid."""
    if "preprocessing" not in config:
        raise WeightsError(f"{source}/{CONFIG_NAME}: no 'preprocessing' (HU window, image size) recorded")
    try:
        return PreprocessingConfig.from_dict(dict(config["preprocessing"]))
    except (ConfigError, TypeError, ValueError) as err:
        raise WeightsError(f"{source}/{CONFIG_NAME}: invalid 'preprocessing' ({err})") from err


def load_encoder_weights(
    path_or_repo: str | os.PathLike[str], *, revision: str | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, config)`` from a weights folder or a Hub repo (``"org/name"``), validated.

    Downloads go through the Hugging Face cache (a 40-hex ``revision`` that is cached makes no
    request; ``HF_HUB_OFFLINE=1`` works with a warm cache). The state dict is checked strictly against
    ``config["model_args"]`` (:func:`config_spec`), so ``encoder.load_state_dict(state_dict)`` cannot fail on
    names or shapes.

    Example:
        >>> sd, cfg = load_encoder_weights("my-org/ddpm-ct-flare", revision="0123abcd" * 5)  # doctest: +SKIP
        >>> cfg["architecture"], cfg["preprocessing"]["hu_window"]                           # doctest: +SKIP
        ('ddpm_ct_unet', [-160.0, 240.0])
    """
    weights = open_encoder_weights(path_or_repo, revision=revision)
    return weights.state_dict(), weights.config


def check_config(config: Mapping[str, Any], source: str) -> None:
    """Refuse a ``config.json`` that does not describe a ``ddpm-ct`` encoder (a timm architecture of ours
    and ``model_args``)."""
    if config.get("architecture") not in _TIMM_NAMES or "model_args" not in config:
        raise WeightsError(
            f"{source}/{CONFIG_NAME}: architecture {config.get('architecture')!r} is not a ddpm-ct encoder "
            f"(expected one of {sorted(_TIMM_NAMES)} with model_args)"
        )


__all__ = [
    "EncoderWeights",
    "architecture_for",
    "build_config",
    "check_config",
    "config_preprocessing",
    "config_spec",
    "load_encoder_weights",
    "open_encoder_weights",
    "save_encoder_weights",
]
