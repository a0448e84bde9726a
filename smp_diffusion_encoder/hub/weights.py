"""The weights folder: ``config.json`` + ``model.safetensors`` + ``README.md``, loadable by smp AND timm.

Layout (one folder = one Hub repo)::

    config.json        architecture + model_args (timm's hf-hub loader), mean/std/input_range (smp),
                       preprocessing (HU window, image size), smp encoder name, format version
    model.safetensors  encoder-only state dict, keys ``unet.*``, strict-loadable by the ``ddpm-ct*`` smp
                       encoders and the ``ddpm_ct_unet*`` timm models
    README.md          model card (see :mod:`smp_diffusion_encoder.hub.card`)

Weights are read from safetensors only. Nothing downloaded is ever unpickled: a folder or repo that
only offers ``pytorch_model.bin`` / ``*.pt`` / ``*.pth`` is refused with :class:`WeightsError`.

Example:
    >>> from smp_diffusion_encoder.encoder import EncoderSpec, FeaturePyramid, FeatureConfig
    >>> spec = EncoderSpec("tiny", FeatureConfig(timesteps=(50,)))
    >>> enc = FeaturePyramid(spec.unet, spec.features)
    >>> save_encoder_weights(enc, "out/tiny", spec, PreprocessingConfig(image_size=64), card={})  # doctest: +SKIP
    >>> state_dict, config = load_encoder_weights("out/tiny")                                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from safetensors.torch import load_file, save_file

from smp_diffusion_encoder._io import atomic_path, atomic_write_json, atomic_write_text, read_json_object
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.encoder.features import FeaturePyramid, encoder_state_dict
from smp_diffusion_encoder.encoder.variants import VARIANTS
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.hub.card import render_model_card
from smp_diffusion_encoder.hub.download import download_file, list_repo_files_safely

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
#: Pickle-based weight files: never loaded, named in the refusal message.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
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
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(sd, str(tmp), metadata={"format": "pt"})
    atomic_write_json(out / CONFIG_NAME, config)
    atomic_write_text(out / CARD_NAME, render_model_card(config, card))
    return out


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


def read_safetensors(path: str | os.PathLike[str], *, source: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file after :func:`validate_safetensors`; errors are :class:`WeightsError`."""
    validate_safetensors(path, source=source)
    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # SafetensorsError: dtype/shape/offset inconsistencies
        raise WeightsError(f"{source}: corrupted safetensors file ({err})") from err


def validate_safetensors(path: str | os.PathLike[str], *, source: str) -> None:
    """Validate a safetensors header against the file size without loading any tensor.

    A truncated or corrupted file (wrong header length, offsets past the end, bytes left over, invalid
    JSON) raises :class:`WeightsError` naming ``source``; garbage is never returned as weights.
    """
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if n <= 0 or n > min(size - 8, 100_000_000):
            raise WeightsError(f"{source}: not a safetensors file (header length {n}, file size {size} bytes)")
        try:
            header = json.loads(fh.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightsError(f"{source}: corrupted safetensors header ({err})") from err
    if not isinstance(header, dict):
        raise WeightsError(f"{source}: corrupted safetensors header (not a JSON object)")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            lo, hi = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise WeightsError(f"{source}: corrupted safetensors header entry {name!r}") from err
        if not 0 <= lo <= hi:
            raise WeightsError(f"{source}: tensor {name!r} has invalid offsets {lo}..{hi}")
        end = max(end, hi)
    if 8 + n + end != size:
        raise WeightsError(
            f"{source}: truncated or padded safetensors file: header promises {8 + n + end} bytes, file has {size}"
        )


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
    local = Path(path_or_repo)
    if local.is_dir():
        source = str(local)
        config_path, weights_path = local / CONFIG_NAME, local / WEIGHTS_NAME
        if not weights_path.is_file():
            raise WeightsError(_no_safetensors_message(source, [p.name for p in local.iterdir()]))
        if not config_path.is_file():
            raise WeightsError(f"{source}: missing {CONFIG_NAME}")
    else:
        repo = str(path_or_repo)
        source = f"{repo}@{revision}" if revision else repo
        config_path = Path(download_file(repo, CONFIG_NAME, revision=revision))
        weights_path = fetch_weights_file(repo, revision=revision)
    config = read_config(config_path, source=source)
    spec = config_spec(config, source=source)
    state_dict = encoder_state_dict(
        read_safetensors(weights_path, source=f"{source}/{WEIGHTS_NAME}"), spec, source=source
    )
    return state_dict, config


def fetch_weights_file(repo_id: str, *, revision: str | None = None) -> Path:
    """Download ``model.safetensors`` (never a pickle file), verify its hash and header; return its path.

    A repo without it raises :class:`WeightsError` naming any pickle-only weight files it offers.
    """
    source = f"{repo_id}@{revision}" if revision else repo_id
    try:
        path = Path(download_file(repo_id, WEIGHTS_NAME, revision=revision))
    except WeightsError as err:
        cause = err.__cause__
        if isinstance(cause, EntryNotFoundError) and not isinstance(cause, LocalEntryNotFoundError):
            names = list_repo_files_safely(repo_id, revision=revision)
            raise WeightsError(_no_safetensors_message(source, names)) from cause
        raise
    verify_cached_blob(path, source=f"{source}/{WEIGHTS_NAME}")
    validate_safetensors(path, source=f"{source}/{WEIGHTS_NAME}")
    return path


def read_config(path: str | os.PathLike[str], *, source: str) -> dict[str, Any]:
    """Parse and sanity-check a weights ``config.json``."""
    config = read_json_object(path, lambda problem: WeightsError(f"{source}/{CONFIG_NAME}: {problem}"))
    if config.get("architecture") not in _TIMM_NAMES or "model_args" not in config:
        raise WeightsError(
            f"{source}/{CONFIG_NAME}: architecture {config.get('architecture')!r} is not a ddpm-ct encoder "
            f"(expected one of {sorted(_TIMM_NAMES)} with model_args)"
        )
    return config


def verify_cached_blob(path: str | os.PathLike[str], *, source: str) -> None:
    """Check a downloaded file against its content hash and drop it from the cache if it differs.

    In the Hugging Face cache a snapshot file links to ``blobs/<etag>``; for large (LFS) files the etag
    is the SHA-256 of the content, so a file altered in transit is detected here. Non-hash etags (git
    blob ids of small files) are left to the safetensors header validation.
    """
    real = Path(os.path.realpath(path))
    etag = real.name
    if real.parent.name != "blobs" or len(etag) != 64 or any(c not in "0123456789abcdef" for c in etag):
        return
    digest = hashlib.sha256()
    with open(real, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != etag:
        for p in (Path(path), real):
            try:
                p.unlink()
            except OSError:
                pass
        raise WeightsError(
            f"{source}: downloaded content has SHA-256 {digest.hexdigest()[:12]}..., the server announced "
            f"{etag[:12]}...; the corrupted copy was removed from the cache, retry the download"
        )


def _no_safetensors_message(source: str, names: list[str]) -> str:
    pickles = sorted(n for n in names if n.endswith(PICKLE_SUFFIXES))
    msg = f"{source}: no {WEIGHTS_NAME}"
    if pickles:
        msg += f"; only pickle-based weights {pickles}, which are refused (unpickling can run arbitrary code)"
    return msg + ". Convert them to safetensors with a trusted copy of the model, then save_encoder_weights()."


def hash_folder(folder: str | os.PathLike[str], names: tuple[str, ...] = (CONFIG_NAME, WEIGHTS_NAME)) -> str:
    """40-hex content revision of the files ``names`` in ``folder`` (SHA-1 over their SHA-256s)."""
    outer = hashlib.sha1()
    for name in names:
        inner = hashlib.sha256()
        with open(Path(folder) / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                inner.update(chunk)
        outer.update(f"{name}\0{inner.hexdigest()}\n".encode())
    return outer.hexdigest()


__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "architecture_for",
    "build_config",
    "config_preprocessing",
    "config_spec",
    "fetch_weights_file",
    "hash_folder",
    "load_encoder_weights",
    "read_config",
    "read_safetensors",
    "save_encoder_weights",
    "validate_safetensors",
    "verify_cached_blob",
]
