"""Pretraining run -> encoder weights folder that smp and timm load (``config.json`` + ``model.safetensors``).

The encoder of a variant is a :class:`~smp_diffusion_encoder.encoder.FeaturePyramid`: the U-Net under the
prefix ``unet.``, truncated after the last decoder block its features use (later blocks and the noise head
are dropped). Export keeps exactly the pyramid's tensors of the run's full U-Net
(:func:`~smp_diffusion_encoder.encoder.features.encoder_state_dict`, every shape checked) and writes the
folder with :func:`~smp_diffusion_encoder.hub.weights.save_encoder_weights` together with the run's
preprocessing and a model card (data, command, steps as recorded by the run; "not recorded" otherwise).

The run's U-Net must be the variant's preset (fields that do not change what the encoder computes,
``learn_sigma`` and ``dropout``, may differ: :meth:`~smp_diffusion_encoder.encoder.config.EncoderSpec.differences`
with ``ignore_neutral``), and its noise schedule becomes the features' schedule. A run trained with another
schedule than the variant's (linear, T=1000) still exports, but its ``config.json`` then names no smp
encoder (``smp_encoder: null``): load it with ``register_encoder_from_hub`` or timm's ``model_args``.

Example:
    >>> export_encoder("runs/ddpm-small", "weights/ddpm-ct", variant="ddpm-ct")               # doctest: +SKIP
    PosixPath('weights/ddpm-ct')
    >>> export_encoder("runs/ddpm-small", "weights/step1000", milestone=1000)                  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from smp_diffusion_encoder.encoder.config import EncoderSpec
from smp_diffusion_encoder.encoder.features import encoder_state_dict
from smp_diffusion_encoder.encoder.variants import get_variant
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.hub.weights import save_encoder_weights
from smp_diffusion_encoder.training.run_folder import RunInfo, load_run


def export_encoder(
    run_or_info: str | os.PathLike[str] | RunInfo,
    out_dir: str | os.PathLike[str],
    *,
    variant: str = "ddpm-ct",
    use_ema: bool | None = None,
    milestone: int | None = None,
    license: str | None = None,
    command: str | None = None,
    card: dict[str, object] | None = None,
) -> Path:
    """Write the encoder weights of a pretraining run for ``variant`` (an smp or timm name) into ``out_dir``.

    Args:
        run_or_info: a run folder / U-Net safetensors file (see :func:`load_run`) or a loaded :class:`RunInfo`.
        use_ema: ``True`` EMA weights, ``False`` raw weights, ``None`` EMA when present.
        milestone: the weights the run kept at that step (``RUN_DIR/milestones/``) instead.
        license: the model card's license (``None``: "not recorded").
        command: overrides the pretraining command recorded in the run's ``config.json``.
        card: further model card fields (see :func:`~smp_diffusion_encoder.hub.card.render_model_card`).

    Returns the folder; ``load_encoder_weights(out_dir)`` then gives a state dict that
    ``smp.Unet(<variant>).encoder`` and ``timm.create_model(<timm name>)`` load strictly.
    """
    info = (
        run_or_info if isinstance(run_or_info, RunInfo) else load_run(run_or_info, use_ema=use_ema, milestone=milestone)
    )
    v = get_variant(variant)
    source = f"{info.weights_file} ({info.weights_kind})"
    differences = v.spec.differences(EncoderSpec(info.unet_config, v.features), ignore_neutral=True)
    if differences:
        raise WeightsError(
            f"{source}: the run's U-Net is not variant {v.smp_name!r}'s architecture: "
            + ", ".join(differences)
            + " (variant vs run)"
        )
    features = dataclasses.replace(v.features, schedule=info.schedule.name, num_timesteps=info.schedule.num_timesteps)
    try:
        spec = EncoderSpec(v.spec.unet, features)
    except ConfigError as err:  # e.g. timesteps of the variant outside a shorter schedule
        raise WeightsError(f"{source}: cannot export as {v.smp_name!r}: {err}") from err
    sd = encoder_state_dict(info.state_dict, spec, source=source, strict=False)
    data = info.config.get("data")
    if isinstance(data, dict):  # the training side records {"store": path, "n_slices": n, "volumes": [...]}
        data = f"{data.get('n_slices')} slices of {', '.join(data.get('volumes', [])) or 'a slice store'}"
    fields = {
        "license": license,
        "pretraining_data": data,
        "pretraining_command": command or info.config.get("command"),
        "pretraining_steps": info.step,
        "notes": f"exported from {info.source.name} ({info.weights_kind} weights, {info.weights_file.name})",
        **(card or {}),
    }
    return save_encoder_weights(sd, out_dir, spec, info.preprocessing, card=fields)


__all__ = ["export_encoder"]
