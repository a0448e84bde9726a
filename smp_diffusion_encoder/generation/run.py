"""Reading a pretraining run (or a plain U-Net weights file): U-Net, schedule, preprocessing, provenance.

Expected layout (what :mod:`smp_diffusion_encoder.training.pretrain` writes, plus optional extras)::

    RUN_DIR/
      config.json          {"unet": UNetConfig.to_dict(), "schedule": {"name": "linear", "num_timesteps": 1000},
                            "preprocess" (or "preprocessing"): PreprocessingConfig.to_dict(),
                            optional: "data" (str or dict, e.g. {"store": ..., "n_slices": ...}),
                            "command" (str), "step" (int)}
      checkpoint.pt        torch checkpoint (also accepted as checkpoints/last.pt):
                            {"step": int, "model": U-Net state dict,
                             "ema": {"module": U-Net state dict, ...} or a plain state dict or None, ...}
                            read with ``torch.load(weights_only=True)`` (tensors and plain containers only)
      ema.safetensors      optional: EMA weights, the FULL U-Net state dict (DiffusionUNet keys)
      model.safetensors    optional: raw weights, same keys

safetensors files win over the checkpoint. Keys prefixed ``module.`` (DDP) or ``_orig_mod.``
(``torch.compile``) are accepted. A single ``*.safetensors`` file is also accepted, with the config JSON
next to it (``config.json``) or given explicitly.

Example:
    >>> info = load_run("runs/ddpm-small")                                      # doctest: +SKIP
    >>> info.unet_config.image_size, info.schedule.name, info.weights_kind       # doctest: +SKIP
    (128, 'linear', 'ema')
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.models.config import UNetConfig
from smp_diffusion_encoder._io import read_json_object
from smp_diffusion_encoder.models.unet import DiffusionUNet

RUN_CONFIG_NAME = "config.json"
EMA_WEIGHTS_NAME = "ema.safetensors"
MODEL_WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_PATHS = (Path("checkpoint.pt"), Path("checkpoints") / "last.pt")
WeightsKind = Literal["ema", "model"]
_PREFIXES = ("module.", "_orig_mod.")


@dataclass(frozen=True)
class RunInfo:
    """What a run holds; ``state_dict`` is the full U-Net's (``DiffusionUNet`` keys)."""

    source: Path
    unet_config: UNetConfig
    schedule: NoiseSchedule
    preprocessing: PreprocessingConfig
    state_dict: dict[str, torch.Tensor]
    weights_kind: WeightsKind
    weights_file: Path
    config: dict[str, Any]
    step: int | None

    def build_unet(self) -> DiffusionUNet:
        """A :class:`DiffusionUNet` with the run's weights, strictly loaded, in eval mode."""
        unet = DiffusionUNet(self.unet_config)
        try:
            unet.load_state_dict(self.state_dict, strict=True)
        except RuntimeError as err:
            raise WeightsError(f"{self.weights_file}: does not match the run's U-Net config ({err})") from err
        return unet.eval()


def read_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a run ``config.json``; it must hold ``unet``, ``schedule`` and ``preprocess`` (or ``preprocessing``,
    which the returned dict always has)."""
    path = Path(path)
    config = read_json_object(path, lambda problem: ConfigError(f"{path}: run config {problem}"))
    if "preprocessing" not in config and "preprocess" in config:
        config["preprocessing"] = config["preprocess"]
    missing = [k for k in ("unet", "schedule", "preprocessing") if k not in config]
    if missing:
        raise ConfigError(f"{path}: run config lacks {missing} (expected keys unet, schedule, preprocess)")
    return config


def _strip(state_dict: dict[str, Any], source: Path) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in state_dict.items():
        if not isinstance(v, torch.Tensor):
            raise WeightsError(f"{source}: entry {k!r} is {type(v).__name__}, not a tensor")
        for p in _PREFIXES:
            k = k.removeprefix(p)
        out[k] = v
    return out


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for anything but plain tensors/containers, truncated files
        raise WeightsError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def load_run(
    path: str | os.PathLike[str],
    *,
    use_ema: bool | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> RunInfo:
    """Read a run folder or a ``*.safetensors`` U-Net file (see the module docstring for the layout).

    ``use_ema``: ``True`` requires EMA weights, ``False`` requires the raw weights, ``None`` takes EMA
    weights when present, else the raw ones. Errors name the files looked for.
    """
    from smp_diffusion_encoder.hub.weights import read_safetensors

    src = Path(path)
    if src.is_file():
        if src.suffix != ".safetensors":
            raise WeightsError(f"{src}: expected a run folder or a .safetensors file of the U-Net state dict")
        config = read_run_config(config_path or src.parent / RUN_CONFIG_NAME)
        kind = "ema" if use_ema or (use_ema is None and src.name == EMA_WEIGHTS_NAME) else "model"
        sd, wfile, step = read_safetensors(src, source=str(src)), src, None
    elif src.is_dir():
        config = read_run_config(config_path or src / RUN_CONFIG_NAME)
        kinds: list[WeightsKind] = ["ema", "model"] if use_ema is None else ["ema" if use_ema else "model"]
        found = None
        ckpt_file = next((src / p for p in CHECKPOINT_PATHS if (src / p).is_file()), None)
        ckpt = _read_checkpoint(ckpt_file) if ckpt_file is not None else None
        for kind in kinds:
            f = src / (EMA_WEIGHTS_NAME if kind == "ema" else MODEL_WEIGHTS_NAME)
            if f.is_file():
                found = (read_safetensors(f, source=str(f)), kind, f)
                break
            entry = ckpt.get(kind) if ckpt is not None else None
            if isinstance(entry, dict) and isinstance(entry.get("module"), dict):  # EMA.state_dict()
                entry = entry["module"]
            if isinstance(entry, dict) and entry:
                found = (entry, kind, ckpt_file)
                break
        if found is None:
            names = [EMA_WEIGHTS_NAME if k == "ema" else MODEL_WEIGHTS_NAME for k in kinds]
            raise WeightsError(
                f"{src}: no {' or '.join(kinds)} weights: looked for {names} and "
                f"{[str(p) for p in CHECKPOINT_PATHS]} with key(s) {kinds}"
                + ("" if use_ema is None else " (drop --use-ema/--no-use-ema to take either)")
            )
        sd, kind, wfile = found
        step = ckpt.get("step") if ckpt is not None else None
    else:
        raise WeightsError(f"{src}: no such run folder or weights file")
    step = step if isinstance(step, int) else config.get("step")
    sched = config["schedule"]
    try:
        schedule = NoiseSchedule(sched["name"], int(sched["num_timesteps"]))
        schedule.betas  # validates the name
    except (KeyError, TypeError) as err:
        raise ConfigError(f"{src}: schedule must be {{'name': ..., 'num_timesteps': ...}}, got {sched!r}") from err
    return RunInfo(
        source=src,
        unet_config=UNetConfig.from_dict(config["unet"]),
        schedule=schedule,
        preprocessing=PreprocessingConfig.from_dict(config["preprocessing"]),
        state_dict=_strip(dict(sd), wfile),
        weights_kind=kind,  # type: ignore[arg-type]
        weights_file=wfile,
        config=config,
        step=step if isinstance(step, int) else None,
    )


__all__ = ["CHECKPOINT_PATHS", "EMA_WEIGHTS_NAME", "MODEL_WEIGHTS_NAME", "RUN_CONFIG_NAME", "RunInfo",
           "WeightsKind", "load_run", "read_run_config"]
