"""The pretraining run folder: its format is written and read here and nowhere else.

Layout::

    RUN_DIR/
      config.json          {"format": "smp_diffusion_encoder.pretrain_run", "unet": UNetConfig.to_dict(),
                            "preprocessing": PreprocessingConfig.to_dict(), "schedule": {"name", "num_timesteps"},
                            "pretrain": PretrainConfig.to_dict(), "train": TrainConfig.to_dict(),
                            "data": {"store", "n_slices", "volumes"}, "command": str,
                            "precision_choice": {"precision", "seconds_per_step", "note"} or null,
                            "runtime": {"preload", "noise_rng", "compile", "device", "world_size", "torch",
                                        "flops_per_sample" (CUDA)} or absent}
                           (runs written before 0.2 say "preprocess" instead of "preprocessing")
      checkpoint.pt        the Trainer's checkpoint (:mod:`~smp_diffusion_encoder.training.checkpoint`):
                            {"step", "model": U-Net state dict, "ema": EMA.state_dict(), ...}
      milestones/step-NNNNNNN.safetensors   EMA U-Net weights kept at chosen steps (a compute curve)
      metrics.csv, loss.png
      slices/              the slice store, when the data given was not one

Also read (weights of other origins): ``ema.safetensors`` / ``model.safetensors`` (full U-Net state dicts,
preferred over the checkpoint), ``checkpoints/last.pt``, or a single ``*.safetensors`` file with the run
config beside it (``config.json``) or given explicitly. Keys prefixed ``module.`` (DDP) or ``_orig_mod.``
(``torch.compile``) are accepted.

Example:
    >>> info = load_run("runs/ddpm-small")                                      # doctest: +SKIP
    >>> info.unet_config.image_size, info.schedule.name, info.weights_kind       # doctest: +SKIP
    (128, 'linear', 'ema')
    >>> sorted(milestones("runs/ddpm-small"))                                    # doctest: +SKIP
    [0, 250, 500, 1000]
"""

from __future__ import annotations

import csv
import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from smp_diffusion_encoder._io import atomic_write_json, read_json_object
from smp_diffusion_encoder.data.preprocessing import PreprocessingConfig
from smp_diffusion_encoder.diffusion.schedule import NoiseSchedule
from smp_diffusion_encoder.errors import ConfigError, WeightsError
from smp_diffusion_encoder.models.config import UNetConfig
from smp_diffusion_encoder.models.unet import DiffusionUNet
from smp_diffusion_encoder.training.config import PretrainConfig
from smp_diffusion_encoder.training.loop import CHECKPOINT_NAME, MILESTONE_DIR, TrainConfig

RUN_FORMAT = "smp_diffusion_encoder.pretrain_run"
RUN_CONFIG_NAME = "config.json"
EMA_WEIGHTS_NAME = "ema.safetensors"
MODEL_WEIGHTS_NAME = "model.safetensors"
CHECKPOINT_PATHS = (Path(CHECKPOINT_NAME), Path("checkpoints") / "last.pt")
_MILESTONE_RE = re.compile(r"^step-(\d+)\.safetensors$")
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


def write_run_config(
    run_dir: str | os.PathLike[str],
    config: PretrainConfig,
    train: TrainConfig,
    preprocessing: PreprocessingConfig,
    data: dict[str, Any],
    *,
    command: str | None,
    precision_choice: dict[str, Any] | None,
    runtime: dict[str, Any] | None = None,
) -> Path:
    """Write ``run_dir/config.json`` (layout in the module docstring) atomically; returns its path."""
    path = Path(run_dir) / RUN_CONFIG_NAME
    atomic_write_json(
        path,
        {
            "format": RUN_FORMAT,
            "unet": config.unet.to_dict(),
            "preprocessing": preprocessing.to_dict(),
            "schedule": config.noise_schedule.to_dict(),
            "pretrain": config.to_dict(),
            "train": train.to_dict(),
            "data": data,
            "command": command,
            "precision_choice": precision_choice,
            **({"runtime": runtime} if runtime is not None else {}),
        },
    )
    return path


def read_run_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a run ``config.json``; it must hold ``unet``, ``schedule`` and ``preprocessing`` (or the older
    ``preprocess``, which the returned dict always also has as ``preprocessing``)."""
    path = Path(path)
    config = read_json_object(path, lambda problem: ConfigError(f"{path}: run config {problem}"))
    if "preprocessing" not in config and "preprocess" in config:
        config["preprocessing"] = config["preprocess"]
    missing = [k for k in ("unet", "schedule", "preprocessing") if k not in config]
    if missing:
        raise ConfigError(f"{path}: run config lacks {missing} (expected keys unet, schedule, preprocessing)")
    return config


def saved_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The :class:`PretrainConfig` settings recorded in ``run_dir/config.json`` (``{}`` without one), for
    ``--resume``: a run written before 0.2 kept its loop settings under ``"train"``."""
    path = Path(run_dir) / RUN_CONFIG_NAME
    if not path.is_file():
        return {}
    config = read_run_config(path)
    train = config.get("train", {})
    loop_keys = {
        "steps": "max_steps",
        "ema_decay": "ema_decay",
        "precision": "precision",
        "grad_clip": "grad_clip",
        "log_every": "log_every",
        "ckpt_every": "ckpt_every",
        "milestones": "milestones",
    }
    saved = {**{new: train[old] for new, old in loop_keys.items() if old in train}, **config.get("pretrain", {})}
    return {k: v for k, v in saved.items() if k in PretrainConfig.__dataclass_fields__}


def milestones(run_dir: str | os.PathLike[str]) -> dict[int, Path]:
    """``{step: path}`` of the milestone weights kept in ``run_dir/milestones/``, ascending."""
    folder = Path(run_dir) / MILESTONE_DIR
    found = {int(m[1]): p for p in folder.iterdir() if (m := _MILESTONE_RE.match(p.name))} if folder.is_dir() else {}
    return dict(sorted(found.items()))


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as err:
        raise WeightsError(f"{path}: unreadable safetensors file ({err})") from err


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
    milestone: int | None = None,
) -> RunInfo:
    """Read a run folder or a ``*.safetensors`` U-Net file (see the module docstring for the layout).

    ``use_ema``: ``True`` requires EMA weights, ``False`` requires the raw weights, ``None`` takes EMA
    weights when present, else the raw ones. ``milestone``: the weights kept at that step instead (a run
    folder's ``milestones/``). Errors name the files looked for.
    """
    src = Path(path)
    if milestone is not None:
        kept = milestones(src) if src.is_dir() else {}
        if milestone not in kept:
            raise WeightsError(f"{src}: no milestone weights of step {milestone} (kept: {sorted(kept) or 'none'})")
        info = load_run(kept[milestone], use_ema=True, config_path=config_path or src / RUN_CONFIG_NAME)
        return dataclasses.replace(info, source=src, step=milestone)
    if src.is_file():
        if src.suffix != ".safetensors":
            raise WeightsError(f"{src}: expected a run folder or a .safetensors file of the U-Net state dict")
        config = read_run_config(config_path or src.parent / RUN_CONFIG_NAME)
        kind = "ema" if use_ema or (use_ema is None and src.name == EMA_WEIGHTS_NAME) else "model"
        sd, wfile, step = _read_safetensors(src), src, None
    elif src.is_dir():
        config = read_run_config(config_path or src / RUN_CONFIG_NAME)
        kinds: list[WeightsKind] = ["ema", "model"] if use_ema is None else ["ema" if use_ema else "model"]
        found = None
        ckpt_file = next((src / p for p in CHECKPOINT_PATHS if (src / p).is_file()), None)
        ckpt = _read_checkpoint(ckpt_file) if ckpt_file is not None else None
        for kind in kinds:
            f = src / (EMA_WEIGHTS_NAME if kind == "ema" else MODEL_WEIGHTS_NAME)
            if f.is_file():
                found = (_read_safetensors(f), kind, f)
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


def training_hours(run_dir: str | os.PathLike[str], *, pause_factor: float = 3.0) -> dict[int, float]:
    """``{step: hours}``: training time to reach each logged step, summed from the run's ``metrics.csv``
    windows (``steps * batch / images_per_s``; time between a stop and its resume does not count). A window
    slower than ``pause_factor`` times the run's median window held a pause of the process (e.g. a SIGSTOP),
    not training: it counts at the median's speed. A run on one thread makes these CPU-core hours.

    Raises:
        ConfigError: ``config.json`` records no pretraining batch size.
    """
    run_dir = Path(run_dir)
    batch = read_run_config(run_dir / RUN_CONFIG_NAME).get("pretrain", {}).get("batch_size")
    if not isinstance(batch, int):
        raise ConfigError(f"{run_dir / RUN_CONFIG_NAME}: no pretraining batch size recorded (not a pretraining run)")
    windows, previous = [], 0
    with open(run_dir / "metrics.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if not row.get("images_per_s"):
                continue
            step = int(float(row["step"]))
            if step <= previous:  # a window logged again after a resume from an earlier checkpoint
                continue
            windows.append((step, (step - previous) * batch / float(row["images_per_s"]) / 3600 / (step - previous)))
            previous = step
    typical = float(np.median([per_step for _, per_step in windows])) if windows else 0.0
    hours, total, previous = {0: 0.0}, 0.0, 0
    for step, per_step in windows:
        total += (step - previous) * min(per_step, pause_factor * typical)
        hours[step], previous = total, step
    return hours


def hours_at(hours: dict[int, float], step: int) -> float:
    """Hours to reach ``step`` (interpolated between logged steps)."""
    below = max(s for s in hours if s <= step)
    above = [s for s in hours if s >= step]
    if not above:
        return hours[below]
    nxt = min(above)
    if nxt == below:
        return hours[below]
    return hours[below] + (hours[nxt] - hours[below]) * (step - below) / (nxt - below)


__all__ = [
    "CHECKPOINT_PATHS",
    "EMA_WEIGHTS_NAME",
    "MODEL_WEIGHTS_NAME",
    "RUN_CONFIG_NAME",
    "RUN_FORMAT",
    "RunInfo",
    "WeightsKind",
    "hours_at",
    "load_run",
    "milestones",
    "read_run_config",
    "saved_settings",
    "training_hours",
    "write_run_config",
]
