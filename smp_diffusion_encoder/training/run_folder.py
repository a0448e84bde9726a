"""The pretraining run folder's format lives in :mod:`smp_diffusion_encoder.formats.run_folder`; these names stay
importable from here (``saved_settings`` keeps its one-argument form: the
:class:`~smp_diffusion_encoder.training.config.PretrainConfig` settings)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from smp_diffusion_encoder.formats import run_folder as _format
from smp_diffusion_encoder.formats.run_folder import (
    CHECKPOINT_PATHS,
    EMA_WEIGHTS_NAME,
    MODEL_WEIGHTS_NAME,
    RUN_CONFIG_NAME,
    RUN_FORMAT,
    RunInfo,
    WeightsKind,
    hours_at,
    load_run,
    milestones,
    read_run_config,
    training_hours,
    write_run_config,
)
from smp_diffusion_encoder.training.config import PretrainConfig


def saved_settings(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The :class:`PretrainConfig` settings recorded in ``run_dir/config.json`` (``{}`` without one)."""
    return _format.saved_settings(run_dir, {f.name for f in dataclasses.fields(PretrainConfig)})


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
