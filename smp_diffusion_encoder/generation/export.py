"""Pretraining run -> encoder weights folder that smp and timm load (``config.json`` + ``model.safetensors``).

The encoder of a variant is a :class:`~smp_diffusion_encoder.encoder.FeaturePyramid`: the U-Net under the
prefix ``unet.``, truncated after the last decoder block its features use (later blocks and the noise head
are dropped). Export keeps exactly the pyramid's keys from the run's full U-Net state dict, checks every
shape, and writes the folder with :func:`~smp_diffusion_encoder.hub.save_encoder_weights` together with the
run's preprocessing and a model card (data, command, steps as recorded by the run; "not recorded" otherwise).

The run's U-Net must be the variant's preset (fields that do not change what the encoder computes,
``learn_sigma`` and ``dropout``, may differ), and its noise schedule becomes the features' schedule. A run
trained with another schedule than the variant's (linear, T=1000) still exports, but its ``config.json``
then names no smp encoder (``smp_encoder: null``): load it with ``register_encoder_from_hub`` or timm's
``model_args``, since the registered name would noise with the wrong schedule.

Example:
    >>> export_encoder("runs/ddpm-small", "weights/ddpm-ct", variant="ddpm-ct")   # doctest: +SKIP
    PosixPath('weights/ddpm-ct')
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from smp_diffusion_encoder.encoder.features import FeatureConfig, FeaturePyramid
from smp_diffusion_encoder.encoder.variants import get_variant
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.generation.run import RunInfo, load_run
from smp_diffusion_encoder.models.config import UNetConfig, resolve_config

#: UNetConfig fields that do not change the (truncated, eval-mode) encoder's computation.
_ENCODER_NEUTRAL_FIELDS = ("learn_sigma", "dropout")


def encoder_state_dict(
    unet_state_dict: Mapping[str, torch.Tensor],
    unet: UNetConfig | str | dict[str, Any],
    features: FeatureConfig,
    *,
    source: str = "U-Net weights",
) -> dict[str, torch.Tensor]:
    """The :class:`FeaturePyramid` state dict (``unet.*`` keys, truncated) taken from a full U-Net's.

    Raises :class:`WeightsError` naming missing tensors and shape mismatches (all of them, up to 5 shown).
    """
    with torch.device("meta"):
        ref = FeaturePyramid(unet, features).state_dict()
    missing = sorted(k for k in ref if k.removeprefix("unet.") not in unet_state_dict)
    if missing:
        raise WeightsError(f"{source}: {len(missing)} encoder tensors missing, e.g. "
                           f"{[k.removeprefix('unet.') for k in missing[:5]]}")
    mismatched = [
        f"{k.removeprefix('unet.')} is {tuple(unet_state_dict[k.removeprefix('unet.')].shape)}, expected {tuple(v.shape)}"
        for k, v in ref.items()
        if tuple(unet_state_dict[k.removeprefix("unet.")].shape) != tuple(v.shape)
    ]
    if mismatched:
        raise WeightsError(f"{source}: {len(mismatched)} shape mismatches: " + "; ".join(mismatched[:5]))
    return {k: unet_state_dict[k.removeprefix("unet.")].detach().to("cpu").contiguous() for k in ref}


def _check_same_architecture(run: UNetConfig, preset: UNetConfig, variant: str, source: str) -> None:
    a, b = dataclasses.replace(run, **{k: getattr(preset, k) for k in _ENCODER_NEUTRAL_FIELDS}), preset
    if a != b:
        diff = [f"{f.name}={getattr(a, f.name)!r} (variant: {getattr(b, f.name)!r})"
                for f in dataclasses.fields(UNetConfig) if getattr(a, f.name) != getattr(b, f.name)]
        raise WeightsError(f"{source}: the run's U-Net is not variant {variant!r}'s architecture: " + ", ".join(diff))


def export_encoder(
    run_or_info: str | os.PathLike[str] | RunInfo,
    out_dir: str | os.PathLike[str],
    *,
    variant: str = "ddpm-ct",
    use_ema: bool | None = None,
    license: str | None = None,
    command: str | None = None,
) -> Path:
    """Write the encoder weights of a pretraining run for ``variant`` (an smp or timm name) into ``out_dir``.

    Args:
        run_or_info: a run folder / U-Net safetensors file (see :func:`load_run`) or a loaded :class:`RunInfo`.
        use_ema: ``True`` EMA weights, ``False`` raw weights, ``None`` EMA when present.
        license: the model card's license (``None``: "not recorded").
        command: overrides the pretraining command recorded in the run's ``config.json``.

    Returns the folder; ``load_encoder_weights(out_dir)`` then gives a state dict that
    ``smp.Unet(<variant>).encoder`` and ``timm.create_model(<timm name>)`` load strictly.
    """
    info = run_or_info if isinstance(run_or_info, RunInfo) else load_run(run_or_info, use_ema=use_ema)
    v = get_variant(variant)
    source = f"{info.weights_file} ({info.weights_kind})"
    preset = resolve_config(v.preset)
    _check_same_architecture(info.unet_config, preset, v.smp_name, source)
    if info.schedule.name != v.features.schedule or info.schedule.num_timesteps != v.features.num_timesteps:
        features = dataclasses.replace(
            v.features, schedule=info.schedule.name, num_timesteps=info.schedule.num_timesteps
        )
    else:
        features = v.features
    sd = encoder_state_dict(info.state_dict, preset, features, source=source)
    data = info.config.get("data")
    if isinstance(data, dict):  # the training side records {"store": path, "n_slices": n}
        data = ", ".join(f"{k}: {v}" for k, v in data.items())
    card = {
        "license": license,
        "pretraining_data": data,
        "pretraining_command": command or info.config.get("command"),
        "pretraining_steps": info.step,
        "notes": f"exported from {info.source} ({info.weights_kind} weights, {info.weights_file.name})",
    }
    from smp_diffusion_encoder.hub.weights import save_encoder_weights

    try:
        return save_encoder_weights(sd, out_dir, unet=preset, features=features,
                                    preprocessing=info.preprocessing, card=card)
    except ConfigError as err:  # e.g. timesteps of the variant outside a shorter schedule
        raise WeightsError(f"{source}: cannot export as {v.smp_name!r}: {err}") from err


__all__ = ["encoder_state_dict", "export_encoder"]
